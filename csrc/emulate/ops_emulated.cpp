// The op schemas and shared checks, for the focal_cuda_emulated library (FOCAL_OPS_NAMESPACE).
#include "../ops.cpp"
