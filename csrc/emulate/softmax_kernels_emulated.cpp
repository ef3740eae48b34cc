// The CUDA source compiled as host C++ against the SIMT emulator (simt.h).
#include "simt.h"

#include "../cuda/softmax_kernels.cu"
