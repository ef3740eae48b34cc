// Elementwise forward kernels (sigmoid focal, binary focal, varifocal, quality focal, asymmetric: one
// traversal, one point functor per loss), and the backward kernel that applies grad_output. One grid-stride
// pass computes loss and gradient with 128-bit accesses when every pointer is 16-byte aligned; a scalar loop
// takes the tail (and everything, when unaligned). One launch per pass (finish_forward_block).
#include "kernels_common.cuh"

namespace focal::cuda {
namespace {

// Point functors: (logit or prob x, target t, class col) -> loss, d loss / d x, from focal_math.h.
template <int G, typename T>
struct SigmoidPoint {
  AlphaWeight<T> alpha;
  const T* class_alpha;  // per-class alpha, or null
  T gamma;
  T smoothing;
  T poly;
  __device__ __forceinline__ void operator()(T x, T t, int64_t col, T& loss, T& grad) const {
    const AlphaWeight<T> a = class_alpha != nullptr ? AlphaWeight<T>{T(1) - class_alpha[col], T(2) * class_alpha[col] - T(1)}
                                                    : alpha;
    sigmoid_focal_point<G>(x, smooth_binary_target(t, smoothing), a, gamma, loss, grad, poly);
  }
};

template <int G, typename T>
struct BinaryPoint {
  AlphaWeight<T> alpha;
  T gamma;
  __device__ __forceinline__ void operator()(T p, T t, int64_t, T& loss, T& grad) const {
    // NaN passes (and propagates), as on CPU.
    CUDA_KERNEL_ASSERT(!(p < T(0) || p > T(1)) && "prob: expected values in [0, 1]");
    binary_focal_point<G>(p, t, alpha, gamma, loss, grad);
  }
};

template <int G, typename T>
struct VarifocalPoint {
  T alpha;
  T gamma;
  bool iou_weighted;
  __device__ __forceinline__ void operator()(T x, T q, int64_t, T& loss, T& grad) const {
    varifocal_point<G>(x, q, alpha, gamma, iou_weighted, loss, grad);
  }
};

template <int G, typename T>
struct QualityFocalPoint {
  T beta;
  __device__ __forceinline__ void operator()(T x, T y, int64_t, T& loss, T& grad) const {
    quality_focal_point<G>(x, y, beta, loss, grad);
  }
};

template <typename T>
struct AsymmetricPoint {
  AsymmetricParams<T> params;
  __device__ __forceinline__ void operator()(T x, T t, int64_t, T& loss, T& grad) const {
    asymmetric_point(x, t, params, loss, grad);
  }
};

// Whether a row with class-index target `tgt` counts: not ignored, and 0 <= tgt <= C (C: background).
__device__ __forceinline__ bool sigmoid_row_counted(int64_t tgt, int64_t C, int64_t ignore_index) {
  if (tgt == ignore_index) return false;
  // Traps and kills the CUDA context, as F.cross_entropy does for a bad class index.
  CUDA_KERNEL_ASSERT(tgt >= 0 && tgt <= C && "target: class index out of range [0, C] and not ignore_index");
  return true;
}

// The inputs of one elementwise launch (ElementwiseParams, typed).
template <typename scalar_t>
struct ElementwiseInputs {
  using op_t = opmath_t<scalar_t>;
  const scalar_t* x;
  const scalar_t* dense_target;  // or null
  const int64_t* index_target;   // or null
  const scalar_t* score;         // or null
  const op_t* weight;            // or null
  WeightMode weight_mode;
  int64_t n;
  int64_t C;
  int64_t ignore_index;
  bool track_rows;  // row / column needed: class-index targets, row or class weights, per-class alpha
  bool vectorized;
};

// Element (row, col) of the (rows, C) input. Class-index targets make element (row, col) positive (with the
// row's score, or 1) iff col == target[row]; a row's target, score and weight are read once per row, never
// expanded to full-size tensors. Ignored rows: loss 0, grad 0, not counted. loss / grad may each be null.
template <typename scalar_t, typename Point>
__global__ void __launch_bounds__(kThreads)
    elementwise_forward_kernel(ElementwiseInputs<scalar_t> in, scalar_t* __restrict__ loss,
                               scalar_t* __restrict__ grad, Point point, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int V = vector_width<scalar_t>();
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  op_t acc(0);
  int64_t count = 0;

  // What the current row contributes to each of its elements.
  struct Row {
    int64_t index = 0;
    int64_t target = -1;
    bool counted = true;
    op_t q = op_t(1);
    op_t weight = op_t(1);
  };
  const auto enter_row = [&](int64_t r, Row& row) {
    row.index = r;
    if (in.index_target != nullptr) {
      row.target = in.index_target[r];
      row.counted = sigmoid_row_counted(row.target, in.C, in.ignore_index);
      row.q = in.score != nullptr ? static_cast<op_t>(in.score[r]) : op_t(1);
    }
    if (in.weight_mode == WeightMode::kRow) row.weight = in.weight[r];
  };
  const auto element = [&](op_t xv, op_t tv, int64_t i, int64_t col, const Row& row, op_t& l, op_t& g) {
    if (in.index_target != nullptr) {
      if (!row.counted) {
        l = op_t(0);
        g = op_t(0);
        return;
      }
      tv = col == row.target ? row.q : op_t(0);
      ++count;
    }
    point(xv, tv, col, l, g);
    if (in.weight_mode != WeightMode::kNone) {
      const op_t w = in.weight_mode == WeightMode::kRow     ? row.weight
                     : in.weight_mode == WeightMode::kClass ? in.weight[col]
                                                            : in.weight[i];
      l *= w;
      g *= w;
    }
    acc += l;
  };

  int64_t tail_begin = 0;
  if (in.vectorized) {
    const int64_t n_vec = in.n / V;
    for (int64_t v = tid; v < n_vec; v += stride) {
      const int64_t base = v * V;
      Row row;
      int64_t col = 0;
      if (in.track_rows) {
        enter_row(base / in.C, row);
        col = base - row.index * in.C;
      }
      const Vector<scalar_t> xv = load_vector(in.x + base);
      Vector<scalar_t> tv;
      if (in.dense_target != nullptr) tv = load_vector(in.dense_target + base);
      Vector<scalar_t> lv, gv;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (in.track_rows && k > 0 && ++col == in.C) {  // the vector crosses into the next row (which exists)
          col = 0;
          enter_row(row.index + 1, row);
        }
        op_t l, g;
        element(static_cast<op_t>(xv.val[k]), in.dense_target != nullptr ? static_cast<op_t>(tv.val[k]) : op_t(0),
                base + k, col, row, l, g);
        lv.val[k] = static_cast<scalar_t>(l);
        gv.val[k] = static_cast<scalar_t>(g);
      }
      if (loss != nullptr) store_vector(loss + base, lv);
      if (grad != nullptr) store_vector(grad + base, gv);
    }
    tail_begin = n_vec * V;
  }
  for (int64_t i = tail_begin + tid; i < in.n; i += stride) {
    Row row;
    int64_t col = 0;
    if (in.track_rows) {
      enter_row(i / in.C, row);
      col = i - row.index * in.C;
    }
    op_t l, g;
    element(static_cast<op_t>(in.x[i]), in.dense_target != nullptr ? static_cast<op_t>(in.dense_target[i]) : op_t(0),
            i, col, row, l, g);
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

template <typename scalar_t, typename Point>
void launch_with_point(const ElementwiseInputs<scalar_t>& in, scalar_t* loss, scalar_t* grad, const Point& point,
                       const ReductionBuffers& reduce, int device, cudaStream_t stream) {
  constexpr int V = vector_width<scalar_t>();
  const int grid = grid_for(in.vectorized ? ceil_div(in.n, V) : in.n, kThreads, device,
                            &elementwise_forward_kernel<scalar_t, Point>, kThreads);
  FOCAL_LAUNCH(grid, kThreads, 0, stream, elementwise_forward_kernel<scalar_t, Point>)(in, loss, grad, point, reduce);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_elementwise_forward(const ElementwiseParams& p, int device, cudaStream_t stream) {
  if (p.numel == 0) return;  // the caller fills the outputs
  dispatch_floating(p.dtype, "focal elementwise forward", [&](auto dtype_tag) {
    using scalar_t = decltype(dtype_tag);
    using op_t = opmath_t<scalar_t>;
    ElementwiseInputs<scalar_t> in;
    in.x = static_cast<const scalar_t*>(p.input);
    in.dense_target = p.index_target ? nullptr : static_cast<const scalar_t*>(p.target);
    in.index_target = p.index_target ? static_cast<const int64_t*>(p.target) : nullptr;
    in.score = static_cast<const scalar_t*>(p.score);
    in.weight = static_cast<const op_t*>(p.weight);
    in.weight_mode = p.weight == nullptr ? WeightMode::kNone : p.weight_mode;
    in.n = p.numel;
    in.C = p.classes < 1 ? 1 : p.classes;
    in.ignore_index = p.ignore_index;
    in.track_rows = p.index_target || p.class_alpha != nullptr || in.weight_mode == WeightMode::kRow ||
                    in.weight_mode == WeightMode::kClass;
    auto* loss = static_cast<scalar_t*>(p.loss);
    auto* grad = static_cast<scalar_t*>(p.grad);
    in.vectorized = is_vector_aligned(in.x) && is_vector_aligned(loss) && is_vector_aligned(grad) &&
                    is_vector_aligned(in.dense_target);
    ReductionBuffers reduce = p.reduce;
    // Dense targets count every element; class-index targets the elements of non-ignored rows.
    reduce.fixed_count = p.index_target ? -1 : p.numel;
    const auto launch = [&](const auto& point) { launch_with_point(in, loss, grad, point, reduce, device, stream); };
    const ElementwiseConstants& c = p.constants;
    const op_t gamma = static_cast<op_t>(c.gamma);
    if (p.loss_kind == ElementwiseLoss::kAsymmetric) {
      launch(AsymmetricPoint<op_t>{{gamma, static_cast<op_t>(c.gamma_neg), static_cast<op_t>(c.clip),
                                    static_cast<op_t>(c.eps), c.detach_modulation}});
      return;
    }
    dispatch_gamma(c.gamma, [&](auto gamma_tag) {
      constexpr int G = decltype(gamma_tag)::value;
      switch (p.loss_kind) {
        case ElementwiseLoss::kSigmoidFocal:
          launch(SigmoidPoint<G, op_t>{AlphaWeight<op_t>::from(c.alpha), static_cast<const op_t*>(p.class_alpha),
                                       gamma, static_cast<op_t>(c.label_smoothing),
                                       static_cast<op_t>(c.poly_epsilon)});
          break;
        case ElementwiseLoss::kBinaryFocal:
          launch(BinaryPoint<G, op_t>{AlphaWeight<op_t>::from(c.alpha), gamma});
          break;
        case ElementwiseLoss::kVarifocal:
          launch(VarifocalPoint<G, op_t>{static_cast<op_t>(c.alpha), gamma, c.iou_weighted});
          break;
        case ElementwiseLoss::kQualityFocal:
          launch(QualityFocalPoint<G, op_t>{gamma});
          break;
        default:
          TORCH_CHECK(false, "focal elementwise forward: unknown loss kind ", static_cast<int>(p.loss_kind));
      }
    });
  });
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
