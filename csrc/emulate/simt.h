// Host stand-in for the CUDA execution model, so csrc/cuda/ compiles with g++ and runs on CPU tensors
// (docs/design.md §6). The emulate/*_emulated.cpp wrappers include it first, then the csrc/cuda source they
// compile; nothing in csrc/cuda includes it.
//
// Model: a launch runs its blocks on a few OS threads; within a block every CUDA thread is a fiber on one
// OS thread, switched only at __syncthreads and warp shuffles, so a missing barrier changes results (run a
// case under the forward and the reverse thread order to see it). __shared__ is `static thread_local`:
// shared by the fibers of a block, private to the OS thread. Device asserts throw in the launching thread.
#pragma once

#ifndef FOCAL_CUDA_EMULATE
#error "simt.h is the CUDA emulation shim: define FOCAL_CUDA_EMULATE"
#endif

#define FOCAL_SIMT_EMULATOR 1

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- keywords: host_defines.h maps __global__/__device__/__host__ to nothing under g++ --------------------
#undef __shared__
#define __shared__ static thread_local
#undef __launch_bounds__
#define __launch_bounds__(...)

// A failing device assert becomes a c10::Error thrown from the launch (CUDA traps asynchronously instead).
#undef CUDA_KERNEL_ASSERT
#define CUDA_KERNEL_ASSERT(cond)                                              \
  do {                                                                        \
    if (C10_UNLIKELY(!(cond))) ::focal::emu::device_assert_fail(#cond, __FILE__, __LINE__); \
  } while (false)

// Kernel launches are synchronous and report errors by throwing, so the launch check has nothing to read.
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (false)
#define C10_CUDA_CHECK(expr)                                                                   \
  do {                                                                                         \
    const cudaError_t focal_emu_status = (expr);                                               \
    TORCH_CHECK(focal_emu_status == cudaSuccess, "emulated CUDA call failed: ", #expr, " returned ", \
                static_cast<int>(focal_emu_status));                                            \
  } while (false)

// The runtime calls the launchers make, answered by the emulator (no libcudart at link or run time).
#define cudaDeviceGetAttribute ::focal::emu::device_get_attribute
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor ::focal::emu::occupancy_max_active_blocks
#define cudaMemsetAsync ::focal::emu::memset_async

// Built-in index variables: set by the scheduler before it resumes a fiber.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace focal::emu {

[[noreturn]] void device_assert_fail(const char* condition, const char* file, int line);
void block_barrier();
// Exchanges `value` across the calling fiber's warp; returns the value lane `src_lane` (0..31) gave.
uint64_t warp_shuffle(uint64_t value, int src_lane);
int lane_id();

cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t occupancy_max_active_blocks(int* blocks, const void* kernel, int block_size, size_t dynamic_smem);
cudaError_t memset_async(void* ptr, int value, size_t count, cudaStream_t stream = nullptr);

// Runs body() once per CUDA thread of every block of the grid; returns when all finished.
void run_grid(dim3 grid, dim3 block, void (*body)(void*), void* context);

// FOCAL_LAUNCH(grid, block, smem, stream, kernel)(args...) under emulation.
template <typename Kernel>
struct Launch {
  dim3 grid;
  dim3 block;
  Kernel kernel;
  template <typename... Args>
  void operator()(Args&&... args) const {
    // Kernel arguments are copied once, as the driver does; each thread's call copies by-value parameters.
    struct Context {
      const Kernel* kernel;
      std::tuple<std::decay_t<Args>...> args;
    } context{&kernel, std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)};
    run_grid(grid, block, [](void* c) {
      auto* ctx = static_cast<Context*>(c);
      std::apply(*ctx->kernel, ctx->args);
    }, &context);
  }
};

template <typename Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t, Kernel kernel) {
  TORCH_CHECK(dynamic_smem == 0, "emulated launch: dynamic shared memory is not emulated");
  return Launch<Kernel>{grid, block, kernel};
}

}  // namespace focal::emu

// ---- device intrinsics ---------------------------------------------------------------------------------------
inline void __syncthreads() { ::focal::emu::block_barrier(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
  return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}

template <typename T>
inline T __shfl_xor_sync(unsigned int /*mask*/, T value, int lane_mask, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t), "shuffle of a wide type");
  const int lane = ::focal::emu::lane_id();
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;  // outside the lane's segment: its own value
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ::focal::emu::warp_shuffle(bits, src);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
