// Implementation of focal_cpu_kernels.h. Included by exactly one .cpp per instruction set, which defines
// FOCAL_CPU_NS (and CPU_CAPABILITY for at::vec) first.
//
// One traversal per data layout, one functor per loss:
//   * elementwise (sigmoid dense, binary): flat blocks of kBlock elements;
//   * rows of C contiguous classes (sigmoid class-index targets, softmax (N, C));
//   * spatial (softmax (N, C, d1..dk)): SIMD lanes run along the contiguous spatial dimension.
// Each block writes its partial loss sum and count to its own slot; the slots are added in order.
#pragma once

#ifndef FOCAL_CPU_NS
#error "define FOCAL_CPU_NS before including focal_cpu_kernels_impl.h"
#endif

#include "elementwise_kernels.h"
#include "softmax_rows.h"
#include "softmax_spatial.h"

namespace focal::cpu::FOCAL_CPU_NS {
namespace {

template <typename scalar_t>
ForwardSums softmax_focal_forward_typed(const ForwardArgs& args, const at::Tensor& alpha_tensor) {
  using op_t = opmath_t<scalar_t>;
  const op_t* alpha = alpha_tensor.defined() ? alpha_tensor.data_ptr<op_t>() : nullptr;
  const bool unbatched = args.input.dim() == 1;
  const int64_t N = unbatched ? 1 : args.input.size(0);
  const int64_t C = unbatched ? args.input.size(0) : args.input.size(1);
  const int64_t S = (N == 0 || C == 0) ? 0 : args.input.numel() / (N * C);
  return dispatch_gamma(args.gamma, [&](auto g) {
    constexpr int G = decltype(g)::value;
    if (S == 1 || N * S == 0) return softmax_rows_forward<G, scalar_t>(args, alpha, N * S, C);
    return softmax_spatial_forward<G, scalar_t>(args, alpha, N, C, S);
  });
}

}  // namespace

ForwardSums elementwise_forward(const ForwardArgs& args, const ElementwiseLossArgs& loss) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(), "focal_elementwise_fwd",
                                         [&] { return elementwise_forward_typed<scalar_t>(args, loss); });
}

ForwardSums softmax_focal_forward(const ForwardArgs& args, const at::Tensor& alpha) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(), "softmax_focal_fwd",
                                         [&] { return softmax_focal_forward_typed<scalar_t>(args, alpha); });
}

}  // namespace focal::cpu::FOCAL_CPU_NS
