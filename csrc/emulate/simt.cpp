// The SIMT emulator behind simt.h: fibers with a hand-written context switch (swapcontext makes a syscall
// per switch, ~10x slower), a per-block scheduler with barrier and warp-shuffle waits, a small pool of OS
// threads for the blocks, and the emulator's configuration ops.
#include "simt.h"

#include "../approx_math.h"

#include "../ops.h"

#include <torch/library.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define FOCAL_EMU_ASAN 1
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace focal::emu {
namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxBlockThreads = 1024;
#if defined(FOCAL_EMU_ASAN)
constexpr size_t kFiberStackBytes = 256 * 1024;  // ASan frames are several times larger
#else
constexpr size_t kFiberStackBytes = 64 * 1024;
#endif

// ---- configuration (set by the emulator_configure op) ----------------------------------------------------------
std::atomic<int> g_sm_count{132};  // an H100/H200 by default
std::atomic<bool> g_reverse_schedule{false};
std::atomic<int> g_workers{2};

// ---- context switch ----------------------------------------------------------------------------------------------
#if defined(__x86_64__)
// focal_emu_switch(save, load): saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores its pointer in *save, and resumes the stack `load` in the same layout.
extern "C" void focal_emu_switch(void** save, void* load);
asm(R"(
.text
.globl focal_emu_switch
.hidden focal_emu_switch
.type focal_emu_switch,@function
focal_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size focal_emu_switch, .-focal_emu_switch
)");
#endif

enum class FiberState { kRunnable, kAtBarrier, kAtWarpSync, kDone };

struct Fiber {
  void* sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t context;
#endif
  FiberState state = FiberState::kRunnable;
  int64_t shuffles = 0;  // warp shuffles this thread has entered
};

// One per OS thread: the fibers of the block it is running and their stacks (kept between blocks).
struct BlockRunner {
  char* stacks = nullptr;
  int stack_count = 0;
  std::vector<Fiber> fibers;
  void* scheduler_sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t scheduler_context;
#endif
  int current = -1;
  void (*body)(void*) = nullptr;
  void* context = nullptr;
  std::exception_ptr error;
  // Shuffle values, double-buffered by the shuffle count's parity: a lane can be one shuffle ahead of a
  // partner that has not read the previous value yet, never two (it waits for the whole warp at each one).
  uint64_t exchange[2][kMaxBlockThreads];
#if defined(FOCAL_EMU_ASAN)
  void* fake_stack = nullptr;
  const void* thread_stack_bottom = nullptr;
  size_t thread_stack_size = 0;
#endif

  ~BlockRunner() { release_stacks(); }

  void release_stacks() {
    if (stacks == nullptr) return;
    const size_t bytes = static_cast<size_t>(stack_count) * kFiberStackBytes;
#if defined(FOCAL_EMU_ASAN)
    // Fiber frames that never returned left poisoned redzones; memory mapped here later must not inherit them.
    __asan_unpoison_memory_region(stacks, bytes);
#endif
    munmap(stacks, bytes);
    stacks = nullptr;
    stack_count = 0;
  }

  void reserve_stacks(int count) {
    if (count <= stack_count) return;
    release_stacks();
    void* mem = mmap(nullptr, static_cast<size_t>(count) * kFiberStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TORCH_CHECK(mem != MAP_FAILED, "emulated launch: could not map ", count, " fiber stacks");
    stacks = static_cast<char*>(mem);
    stack_count = count;
  }
  char* stack_bottom(int fiber) const { return stacks + static_cast<size_t>(fiber) * kFiberStackBytes; }
};

thread_local BlockRunner t_runner;

void switch_to_fiber(BlockRunner& r, int t);
void yield_to_scheduler(BlockRunner& r);

[[noreturn]] void fiber_main() {
  BlockRunner& r = t_runner;
#if defined(FOCAL_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &r.thread_stack_bottom, &r.thread_stack_size);
#endif
  try {
    r.body(r.context);
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  r.fibers[r.current].state = FiberState::kDone;
  yield_to_scheduler(r);
  __builtin_unreachable();
}

#if !defined(__x86_64__)
void fiber_main_ucontext() { fiber_main(); }
#endif

void start_fiber(BlockRunner& r, int t) {
  Fiber& f = r.fibers[t];
  f.state = FiberState::kRunnable;
  f.shuffles = 0;
#if defined(FOCAL_EMU_ASAN)
  // A finished fiber's frames never returned: their redzones stay poisoned until the stack is reused.
  __asan_unpoison_memory_region(r.stack_bottom(t), kFiberStackBytes);
#endif
#if defined(__x86_64__)
  // Initial frame read by focal_emu_switch: control words, six registers, then the "return" into
  // fiber_main with the stack aligned as at a call (rsp % 16 == 8 on entry).
  auto* top = reinterpret_cast<uint64_t*>(
      (reinterpret_cast<uintptr_t>(r.stack_bottom(t) + kFiberStackBytes) & ~uintptr_t(15)));
  *--top = 0;  // fake return address of fiber_main: it never returns
  *--top = reinterpret_cast<uint64_t>(&fiber_main);
  for (int i = 0; i < 6; ++i) *--top = 0;
  uint32_t mxcsr;
  uint16_t fpu_cw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu_cw));
  *--top = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpu_cw) << 32);
  f.sp = top;
#else
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = r.stack_bottom(t);
  f.context.uc_stack.ss_size = kFiberStackBytes;
  f.context.uc_link = nullptr;
  makecontext(&f.context, fiber_main_ucontext, 0);
#endif
}

void switch_to_fiber(BlockRunner& r, int t) {
  r.current = t;
  threadIdx = uint3{static_cast<unsigned>(t), 0u, 0u};
#if defined(FOCAL_EMU_ASAN)
  __sanitizer_start_switch_fiber(&r.fake_stack, r.stack_bottom(t), kFiberStackBytes);
#endif
#if defined(__x86_64__)
  focal_emu_switch(&r.scheduler_sp, r.fibers[t].sp);
#else
  swapcontext(&r.scheduler_context, &r.fibers[t].context);
#endif
#if defined(FOCAL_EMU_ASAN)
  __sanitizer_finish_switch_fiber(r.fake_stack, nullptr, nullptr);
#endif
}

void yield_to_scheduler(BlockRunner& r) {
  Fiber& f = r.fibers[r.current];
#if defined(FOCAL_EMU_ASAN)
  void* fake = nullptr;
  // A finished fiber's fake stack is released (null save slot).
  __sanitizer_start_switch_fiber(f.state == FiberState::kDone ? nullptr : &fake, r.thread_stack_bottom,
                                 r.thread_stack_size);
#endif
#if defined(__x86_64__)
  focal_emu_switch(&f.sp, r.scheduler_sp);
#else
  swapcontext(&f.context, &r.scheduler_context);
#endif
#if defined(FOCAL_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, &r.thread_stack_bottom, &r.thread_stack_size);
#endif
}

// Releases the fibers waiting at a sync point that every live participant has reached. Returns whether any
// fiber became runnable.
bool release_waiters(BlockRunner& r, int threads) {
  bool released = false;
  for (int w = 0; w * kWarpSize < threads; ++w) {
    const int begin = w * kWarpSize, end = std::min(threads, begin + kWarpSize);
    bool any_waiting = false, all_arrived = true;
    for (int t = begin; t < end; ++t) {
      const FiberState s = r.fibers[t].state;
      any_waiting |= s == FiberState::kAtWarpSync;
      all_arrived &= s == FiberState::kAtWarpSync || s == FiberState::kDone;
    }
    if (any_waiting && all_arrived) {
      for (int t = begin; t < end; ++t) {
        if (r.fibers[t].state == FiberState::kAtWarpSync) r.fibers[t].state = FiberState::kRunnable;
      }
      released = true;
    }
  }
  if (released) return true;
  bool any_at_barrier = false, all_at_barrier = true;
  for (int t = 0; t < threads; ++t) {
    const FiberState s = r.fibers[t].state;
    any_at_barrier |= s == FiberState::kAtBarrier;
    all_at_barrier &= s == FiberState::kAtBarrier || s == FiberState::kDone;
  }
  if (!(any_at_barrier && all_at_barrier)) return false;
  for (int t = 0; t < threads; ++t) {
    if (r.fibers[t].state == FiberState::kAtBarrier) r.fibers[t].state = FiberState::kRunnable;
  }
  return true;
}

void run_block(BlockRunner& r, int threads, bool reverse) {
  r.reserve_stacks(threads);
  r.fibers.resize(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) start_fiber(r, t);
  int live = threads;
  while (live > 0 && !r.error) {
    for (int i = 0; i < threads && !r.error; ++i) {
      const int t = reverse ? threads - 1 - i : i;
      if (r.fibers[t].state != FiberState::kRunnable) continue;
      switch_to_fiber(r, t);
      if (r.fibers[t].state == FiberState::kDone) --live;
    }
    if (live > 0 && !r.error && !release_waiters(r, threads)) {
      r.error = std::make_exception_ptr(c10::Error(
          {__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
          "emulated CUDA: deadlock in block " + std::to_string(blockIdx.x) +
              ": threads wait at a __syncthreads or warp shuffle that other live threads never reach"));
    }
  }
  r.current = -1;
}

}  // namespace

int lane_id() {
  return static_cast<int>(threadIdx.x) % kWarpSize;
}

void device_assert_fail(const char* condition, const char* file, int line) {
  throw c10::Error({__func__, file, static_cast<uint32_t>(line)},
                   std::string("CUDA error: device-side assert triggered (emulated): ") + condition +
                       " in block " + std::to_string(blockIdx.x) + ", thread " + std::to_string(threadIdx.x));
}

void block_barrier() {
  BlockRunner& r = t_runner;
  TORCH_CHECK(r.current >= 0, "__syncthreads outside an emulated kernel");
  r.fibers[r.current].state = FiberState::kAtBarrier;
  yield_to_scheduler(r);
}

uint64_t warp_shuffle(uint64_t value, int src_lane) {
  BlockRunner& r = t_runner;
  TORCH_CHECK(r.current >= 0, "warp shuffle outside an emulated kernel");
  const int me = r.current;
  Fiber& f = r.fibers[me];
  const int slot = static_cast<int>(f.shuffles++ & 1);
  r.exchange[slot][me] = value;
  f.state = FiberState::kAtWarpSync;
  yield_to_scheduler(r);
  const int src = me - lane_id() + src_lane;
  // The source lane has entered this shuffle (it may already be waiting at the next one).
  if (src >= static_cast<int>(r.fibers.size()) || r.fibers[src].shuffles < f.shuffles) {
    // The source lane exited or is not at this shuffle: undefined on a GPU, an error here.
    throw c10::Error({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                     "emulated CUDA: lane " + std::to_string(me % kWarpSize) + " shuffles from lane " +
                         std::to_string(src_lane) + ", which did not take part in the same shuffle");
  }
  return r.exchange[slot][src];
}

cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = g_sm_count.load();
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      *value = 2048;
      return cudaSuccess;
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t occupancy_max_active_blocks(int* blocks, const void* /*kernel*/, int block_size, size_t /*smem*/) {
  // Registers are unknown here: the thread limit of an sm_90 SM (2048 threads, at most 32 blocks).
  *blocks = std::clamp(2048 / std::max(block_size, 1), 1, 32);
  return cudaSuccess;
}

cudaError_t memset_async(void* ptr, int value, size_t count, cudaStream_t) {
  std::memset(ptr, value, count);
  return cudaSuccess;
}

void run_grid(dim3 grid, dim3 block, void (*body)(void*), void* context) {
  TORCH_CHECK(grid.y == 1 && grid.z == 1 && block.y == 1 && block.z == 1,
              "emulated launch: only 1-D grids and blocks are emulated");
  TORCH_CHECK(block.x >= 1 && block.x <= kMaxBlockThreads, "emulated launch: block size ", block.x,
              " outside [1, ", kMaxBlockThreads, "]");
  const int64_t blocks = grid.x;
  if (blocks == 0) return;
  const bool reverse = g_reverse_schedule.load();
  std::atomic<int64_t> next_block{0};
  std::mutex error_mutex;
  std::exception_ptr first_error;
  const auto worker = [&] {
    BlockRunner& r = t_runner;
    TORCH_CHECK(r.current < 0, "emulated launch from inside an emulated kernel");
    r.body = body;
    r.context = context;
    gridDim = grid;
    blockDim = block;
    for (int64_t b = next_block++; b < blocks; b = next_block++) {
      blockIdx = uint3{static_cast<unsigned>(b), 0u, 0u};
      r.error = nullptr;
      run_block(r, static_cast<int>(block.x), reverse);
      if (r.error) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = r.error;
        next_block = blocks;  // stop handing out blocks
      }
    }
  };
  const int64_t workers = std::min<int64_t>(std::max(1, g_workers.load()), blocks);
  std::vector<std::thread> helpers;
  for (int64_t w = 1; w < workers; ++w) {
    helpers.emplace_back([&] {
      try {
        worker();
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
    });
  }
  try {
    worker();
  } catch (...) {
    const std::lock_guard<std::mutex> lock(error_mutex);
    if (!first_error) first_error = std::current_exception();
  }
  for (auto& h : helpers) h.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace focal::emu

namespace {

// sm_count <= 0 keeps the current value; workers: OS threads that run blocks (blocks of one launch run
// concurrently on them; results must not depend on it).
void emulator_configure(int64_t sm_count, bool reverse_schedule, int64_t workers) {
  if (sm_count > 0) focal::emu::g_sm_count = static_cast<int>(sm_count);
  focal::emu::g_reverse_schedule = reverse_schedule;
  if (workers > 0) focal::emu::g_workers = static_cast<int>(std::min<int64_t>(workers, 64));
}

std::vector<int64_t> emulator_state() {
  return {focal::emu::g_sm_count.load(), focal::emu::g_reverse_schedule.load() ? 1 : 0,
          focal::emu::g_workers.load()};
}

// The direction of the emulated approx-math error (approx_math.h): 0 hashed per input, +1 all up, -1 all down.
// Returns the previous mode.
int64_t approx_error_mode(int64_t mode) {
  TORCH_CHECK_VALUE(mode >= -1 && mode <= 1, "mode: expected -1 (down), 0 (hashed) or 1 (up), got ", mode);
  return focal::approx::error_mode().exchange(static_cast<int>(mode));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(focal_cuda_emulated, m) {
  m.def("approx_error_mode(int mode) -> int", &approx_error_mode);
  m.def("emulator_configure(int sm_count, bool reverse_schedule, int workers) -> ()", &emulator_configure);
  m.def("emulator_state() -> int[]", &emulator_state);
}
