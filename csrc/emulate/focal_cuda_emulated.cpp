// The CUDA backend glue, registering the emulated kernels as the focal_cuda_emulated ops on CPU tensors.
#include "simt.h"

#include "../cuda/focal_cuda.cpp"
