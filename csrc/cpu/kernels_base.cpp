// CPU kernels for any x86/ARM processor (ATen's DEFAULT vector width).
#define CPU_CAPABILITY DEFAULT
#define FOCAL_CPU_NS base
#include "focal_cpu_kernels_impl.h"
