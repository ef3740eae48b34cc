// CPU kernels for AVX2+FMA processors; used only when the processor and torch's own kernels use AVX2 (see
// focal_cpu.cpp). Not built on other architectures.
#if defined(__x86_64__) || defined(_M_X64)
// setuptools gives every file the same flags, so this file enables AVX2 itself. g++ does not define the
// feature macros for a target pragma, and ATen's/Sleef's headers select their AVX2 code by them.
#pragma GCC target("avx,avx2,fma,f16c,popcnt,sse4.1,sse4.2")
#ifndef __AVX2__
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define __SSE4_1__ 1
#define __SSE4_2__ 1
#define __POPCNT__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define FOCAL_CPU_NS avx2
#include "focal_cpu_kernels_impl.h"
#endif
