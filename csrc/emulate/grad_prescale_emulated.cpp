// The fp16 gradient prescale shared by both backends, for the focal_cuda_emulated library.
#include "../grad_prescale.cpp"
