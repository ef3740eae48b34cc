// Elementwise forward kernels: sigmoid focal loss (dense targets or one class index per row) and binary
// focal loss on probabilities, and the backward kernel that applies grad_output. One grid-stride pass
// computes loss and gradient with 128-bit accesses when every pointer is 16-byte aligned; a scalar loop
// takes the tail (and everything, when unaligned). One launch per pass (finish_forward_block).
#include "kernels_common.cuh"

namespace focal::cuda {
namespace {

template <int G, typename T>
struct SigmoidPoint {
  AlphaWeight<T> alpha;
  T gamma;
  T smoothing;
  __device__ __forceinline__ void operator()(T x, T t, T& loss, T& grad) const {
    sigmoid_focal_point<G>(x, smooth_binary_target(t, smoothing), alpha, gamma, loss, grad);
  }
};

template <int G, typename T>
struct BinaryPoint {
  AlphaWeight<T> alpha;
  T gamma;
  __device__ __forceinline__ void operator()(T p, T t, T& loss, T& grad) const {
    // NaN passes (and propagates), as on CPU.
    CUDA_KERNEL_ASSERT(!(p < T(0) || p > T(1)) && "prob: expected values in [0, 1]");
    binary_focal_point<G>(p, t, alpha, gamma, loss, grad);
  }
};

// Dense target of the input's shape. loss / grad may each be null.
template <typename scalar_t, typename Point>
__global__ void __launch_bounds__(kThreads)
    dense_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ t, scalar_t* __restrict__ loss,
                         scalar_t* __restrict__ grad, int64_t n, bool vectorized, Point point,
                         ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int V = vector_width<scalar_t>();
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  op_t acc(0);
  int64_t tail_begin = 0;
  if (vectorized) {
    const int64_t n_vec = n / V;
    for (int64_t v = tid; v < n_vec; v += stride) {
      const Vector<scalar_t> xv = load_vector(x + v * V);
      const Vector<scalar_t> tv = load_vector(t + v * V);
      Vector<scalar_t> lv, gv;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        op_t l, g;
        point(static_cast<op_t>(xv.val[k]), static_cast<op_t>(tv.val[k]), l, g);
        lv.val[k] = static_cast<scalar_t>(l);
        gv.val[k] = static_cast<scalar_t>(g);
        acc += l;
      }
      if (loss != nullptr) store_vector(loss + v * V, lv);
      if (grad != nullptr) store_vector(grad + v * V, gv);
    }
    tail_begin = n_vec * V;
  }
  for (int64_t i = tail_begin + tid; i < n; i += stride) {
    op_t l, g;
    point(static_cast<op_t>(x[i]), static_cast<op_t>(t[i]), l, g);
    if (loss != nullptr) loss[i] = static_cast<scalar_t>(l);
    if (grad != nullptr) grad[i] = static_cast<scalar_t>(g);
    acc += l;
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), 0.0, reduce);
}

// Whether a row with class-index target `tgt` counts: not ignored, and 0 <= tgt <= C (C: background).
__device__ __forceinline__ bool sigmoid_row_counted(int64_t tgt, int64_t C, int64_t ignore_index) {
  if (tgt == ignore_index) return false;
  // Traps and kills the CUDA context, as F.cross_entropy does for a bad class index.
  CUDA_KERNEL_ASSERT(tgt >= 0 && tgt <= C && "target: class index out of range [0, C] and not ignore_index");
  return true;
}

// Class-index targets: element (row, col) of the (rows, C) input is positive iff col == target[row]; a row's
// target is read once per row change, never expanded to a one-hot tensor. Ignored rows: loss 0, grad 0.
template <typename scalar_t, typename Point>
__global__ void __launch_bounds__(kThreads)
    index_forward_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                         scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t n, int64_t C,
                         int64_t ignore_index, bool vectorized, Point point, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int V = vector_width<scalar_t>();
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  op_t acc(0);
  int64_t count = 0;
  // Loss and gradient of element `col` of a row with target tgt.
  const auto element = [&](op_t xv, int64_t col, int64_t tgt, bool counted, op_t& l, op_t& g) {
    if (counted) {
      point(xv, col == tgt ? op_t(1) : op_t(0), l, g);
      acc += l;
      ++count;
    } else {
      l = op_t(0);
      g = op_t(0);
    }
  };
  int64_t tail_begin = 0;
  if (vectorized) {
    const int64_t n_vec = n / V;
    for (int64_t v = tid; v < n_vec; v += stride) {
      int64_t row = (v * V) / C;
      int64_t col = v * V - row * C;
      int64_t tgt = target[row];
      bool counted = sigmoid_row_counted(tgt, C, ignore_index);
      const Vector<scalar_t> xv = load_vector(x + v * V);
      Vector<scalar_t> lv, gv;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (k > 0 && ++col == C) {  // the vector crosses into the next row (which exists: element v*V+k does)
          col = 0;
          ++row;
          tgt = target[row];
          counted = sigmoid_row_counted(tgt, C, ignore_index);
        }
        op_t l, g;
        element(static_cast<op_t>(xv.val[k]), col, tgt, counted, l, g);
        lv.val[k] = static_cast<scalar_t>(l);
        gv.val[k] = static_cast<scalar_t>(g);
      }
      if (loss != nullptr) store_vector(loss + v * V, lv);
      if (grad != nullptr) store_vector(grad + v * V, gv);
    }
    tail_begin = n_vec * V;
  }
  for (int64_t i = tail_begin + tid; i < n; i += stride) {
    const int64_t row = i / C;
    const int64_t tgt = target[row];
    op_t l, g;
    element(static_cast<op_t>(x[i]), i - row * C, tgt, sigmoid_row_counted(tgt, C, ignore_index), l, g);
    if (loss != nullptr) loss[i] = static_cast<scalar_t>(l);
    if (grad != nullptr) grad[i] = static_cast<scalar_t>(g);
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// out = grad * grad_output in opmath; see BackwardParams.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    apply_grad_output_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ grad_output,
                             const opmath_t<scalar_t>* __restrict__ grad_scale, scalar_t* __restrict__ out, int64_t n,
                             bool reduced, int64_t classes, int64_t spatial) {
  using op_t = opmath_t<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  // The scale is applied in opmath: 1/count rounded to fp16 would be subnormal or 0 for large means.
  const op_t factor = reduced ? static_cast<op_t>(grad_output[0]) * *grad_scale : op_t(1);
  const int64_t row_elements = classes * spatial;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    op_t go = factor;
    if (!reduced) {
      go = static_cast<op_t>(classes > 0 ? grad_output[(i / row_elements) * spatial + i % spatial] : grad_output[i]);
    }
    out[i] = static_cast<scalar_t>(static_cast<op_t>(grad[i]) * go);
  }
}

enum class ElementwiseKind { kSigmoidDense, kSigmoidIndex, kBinary };

template <ElementwiseKind kind>
void launch_elementwise(const ElementwiseParams& p, int device, cudaStream_t stream, const char* name) {
  if (p.numel == 0) return;  // the caller fills the outputs
  dispatch_floating(p.dtype, name, [&](auto dtype_tag) {
    using scalar_t = decltype(dtype_tag);
    using op_t = opmath_t<scalar_t>;
    constexpr int V = vector_width<scalar_t>();
    const auto* x = static_cast<const scalar_t*>(p.input);
    auto* loss = static_cast<scalar_t*>(p.loss);
    auto* grad = static_cast<scalar_t*>(p.grad);
    const bool aligned = is_vector_aligned(x) && is_vector_aligned(loss) && is_vector_aligned(grad) &&
                         (kind == ElementwiseKind::kSigmoidIndex || is_vector_aligned(p.target));
    const int64_t work = aligned ? ceil_div(p.numel, V) : p.numel;
    const auto alpha = AlphaWeight<op_t>::from(p.alpha);
    const op_t gamma = static_cast<op_t>(p.gamma);
    ReductionBuffers reduce = p.reduce;
    // Dense losses count every element; class-index losses count the elements of non-ignored rows.
    reduce.fixed_count = kind == ElementwiseKind::kSigmoidIndex ? -1 : p.numel;
    dispatch_gamma(p.gamma, [&](auto gamma_tag) {
      constexpr int G = decltype(gamma_tag)::value;
      if constexpr (kind == ElementwiseKind::kBinary) {
        using Point = BinaryPoint<G, op_t>;
        const int grid = grid_for(work, kThreads, device, &dense_forward_kernel<scalar_t, Point>, kThreads);
        FOCAL_LAUNCH(grid, kThreads, 0, stream, dense_forward_kernel<scalar_t, Point>)(
            x, static_cast<const scalar_t*>(p.target), loss, grad, p.numel, aligned, Point{alpha, gamma}, reduce);
      } else {
        using Point = SigmoidPoint<G, op_t>;
        const Point point{alpha, gamma, static_cast<op_t>(p.label_smoothing)};
        if constexpr (kind == ElementwiseKind::kSigmoidDense) {
          const int grid = grid_for(work, kThreads, device, &dense_forward_kernel<scalar_t, Point>, kThreads);
          FOCAL_LAUNCH(grid, kThreads, 0, stream, dense_forward_kernel<scalar_t, Point>)(
              x, static_cast<const scalar_t*>(p.target), loss, grad, p.numel, aligned, point, reduce);
        } else {
          const int grid = grid_for(work, kThreads, device, &index_forward_kernel<scalar_t, Point>, kThreads);
          FOCAL_LAUNCH(grid, kThreads, 0, stream, index_forward_kernel<scalar_t, Point>)(
              x, static_cast<const int64_t*>(p.target), loss, grad, p.numel, p.classes, p.ignore_index, aligned,
              point, reduce);
        }
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace

void launch_sigmoid_dense_forward(const ElementwiseParams& params, int device, cudaStream_t stream) {
  launch_elementwise<ElementwiseKind::kSigmoidDense>(params, device, stream, "sigmoid_focal_fwd");
}

void launch_sigmoid_index_forward(const ElementwiseParams& params, int device, cudaStream_t stream) {
  launch_elementwise<ElementwiseKind::kSigmoidIndex>(params, device, stream, "sigmoid_focal_fwd");
}

void launch_binary_forward(const ElementwiseParams& params, int device, cudaStream_t stream) {
  launch_elementwise<ElementwiseKind::kBinary>(params, device, stream, "binary_focal_fwd");
}

void launch_apply_grad_output(const BackwardParams& p, int device, cudaStream_t stream) {
  if (p.numel == 0) return;
  dispatch_floating(p.dtype, "focal_bwd", [&](auto dtype_tag) {
    using scalar_t = decltype(dtype_tag);
    const int grid = grid_for(p.numel, kThreads, device, &apply_grad_output_kernel<scalar_t>, kThreads);
    FOCAL_LAUNCH(grid, kThreads, 0, stream, apply_grad_output_kernel<scalar_t>)(
        static_cast<const scalar_t*>(p.grad), static_cast<const scalar_t*>(p.grad_output),
        static_cast<const opmath_t<scalar_t>*>(p.grad_scale), static_cast<scalar_t*>(p.out), p.numel, p.reduced,
        p.classes, p.spatial);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace focal::cuda
