// Diagnostic op: how many distinct threads at::parallel_for runs on when called from inside this extension.
// at::parallel_for is an inline template, so it is this library's compile flags (OpenMP or not), not torch's,
// that decide whether the CPU kernels run on one thread or on all of them; tests/test_threads.py checks it.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <mutex>
#include <set>
#include <thread>

namespace focal {
namespace {

// Runs `blocks` blocks of grain 1 through at::parallel_for, as the kernels do, and counts the distinct
// threads that ran at least one of them.
int64_t parallel_threads_used(int64_t blocks) {
  TORCH_CHECK_VALUE(blocks >= 0, "blocks: expected a non-negative count, got ", blocks);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    if (begin >= end) return;
    const std::lock_guard<std::mutex> lock(mutex);
    threads.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(threads.size());
}

}  // namespace
}  // namespace focal

TORCH_LIBRARY_FRAGMENT(focal_cuda, m) {
  // No tensor arguments, so no dispatch key: the function is registered as the catch-all kernel.
  m.def("parallel_threads_used(int blocks) -> int", &focal::parallel_threads_used);
}
