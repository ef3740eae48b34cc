// CPU kernels for AVX-512 processors (F, BW, VL, DQ: ATen's AVX512 level); used only when torch's own kernels
// run AVX512 too (see focal_cpu.cpp), so the roofline torch.exp and these kernels use the same vector width.
// Not built on other architectures.
#if defined(__x86_64__) || defined(_M_X64)
// As in kernels_avx2.cpp: the target pragma enables the instructions, the macros select ATen's/Sleef's code.
#pragma GCC target("avx,avx2,fma,f16c,popcnt,sse4.1,sse4.2,avx512f,avx512bw,avx512vl,avx512dq")
#ifndef __AVX512F__
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define __SSE4_1__ 1
#define __SSE4_2__ 1
#define __POPCNT__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define FOCAL_CPU_NS avx512
#include "focal_cpu_kernels_impl.h"
#endif
