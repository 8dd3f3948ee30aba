// The kernels of fastgen's native CPU ops, written once over an instruction set V (isa_*.h) and turned
// into a KernelTable by make_table<V>. Each translation unit kernels_<isa>.cpp includes its isa_<isa>.h,
// then this file, and is compiled for that instruction set alone.
//
// The arithmetic follows the Triton kernels in fastgen/ops/triton/ operation by operation, in float32,
// without contraction into fused multiply-adds (CMakeLists.txt passes -ffp-contract=off).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernel_table.h"
#include "philox.h"
#include "vector_math.h"

namespace fastgen_native {
namespace {

template <class V>
inline int lanes_left(int64_t i, int64_t end) {
  return end - i < V::W ? static_cast<int>(end - i) : V::W;
}

// z ~ N(0, 1) for elements first .. first + W - 1: tl.random.pair_uniform_to_normal's first output.
template <class V>
inline typename V::F normal_lanes(const PhiloxSchedule& s, uint64_t first) {
  using F = typename V::F;
  const PhiloxLanes<V> lanes = philox_lanes<V>(s, first);
  const F u1 = V::max(V::set1(1.0e-7f), uniform<V>(philox_word(lanes, 0)));
  const F u2 = uniform<V>(philox_word(lanes, 1));
  const F theta = V::mul(V::set1(6.283185307179586f), u2);
  const F radius = V::sqrt(V::mul(V::set1(-2.0f), log_v<V>(u1)));
  return V::mul(radius, cos_v<V>(theta));
}

// bfloat16 bits (zero-extended into lanes) as float32: the high half of the float's bits.
template <class V>
inline typename V::F bf16_to_float(typename V::U bits) {
  return V::as_f(V::template ushl<16>(bits));
}

// float32 to bfloat16 bits, rounded to nearest even; NaN to the quiet NaN 0x7FC0 (torch's conversion).
template <class V>
inline typename V::U float_to_bf16(typename V::F x) {
  using U = typename V::U;
  const U bits = V::as_u(x);
  const U lsb = V::uand(V::template ushr<16>(bits), V::uset1(1));
  const U rounded = V::template ushr<16>(V::uadd(bits, V::uadd(lsb, V::uset1(0x7FFF))));
  return V::uselect(V::isnan(x), V::uset1(0x7FC0), rounded);
}

// Element storage of the row kernels: float32, or bfloat16 bits as uint16_t (computed in float32, rounded once).
template <class V>
inline typename V::F load(const float* p, int n) {
  return V::loadn(p, n);
}
template <class V>
inline typename V::F load(const uint16_t* p, int n) {
  return bf16_to_float<V>(V::load_u16n(p, n));
}
template <class V>
inline void store(float* p, typename V::F v, int n) {
  V::storen(p, v, n);
}
template <class V>
inline void store(uint16_t* p, typename V::F v, int n) {
  V::store_u16n(p, float_to_bf16<V>(v), n);
}

// ---- linear_leaky_relu_dropout: the epilogue and its backward ----------------------------------------

template <class V, bool kBias, bool kDropout, class T>
void leaky_relu_dropout_rows(const T* pre, const T* bias, T* out, int64_t row_begin, int64_t row_end, int64_t cols,
                             float negative_slope, float p, PhiloxKey key) {
  using F = typename V::F;
  const PhiloxSchedule schedule(key);
  const F zero = V::set1(0.0f), slope = V::set1(negative_slope), p_v = V::set1(p), keep_prob = V::set1(1.0f - p);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const T* in = pre + r * cols;
    T* o = out + r * cols;
    const uint64_t first = static_cast<uint64_t>(r) * static_cast<uint64_t>(cols);
    for (int64_t c = 0; c < cols; c += V::W) {
      const int n = lanes_left<V>(c, cols);
      F a = load<V>(in + c, n);
      if constexpr (kBias) a = V::add(a, load<V>(bias + c, n));
      F y = V::select(V::gt(a, zero), a, V::mul(a, slope));
      if constexpr (kDropout) {
        y = V::select(keep_lanes<V>(schedule, first + static_cast<uint64_t>(c), p_v), V::div(y, keep_prob), zero);
      }
      store<V>(o + c, y, n);
    }
  }
}

template <class V, class T>
void leaky_relu_dropout(const T* pre, const T* bias, T* out, int64_t row_begin, int64_t row_end, int64_t cols,
                        float negative_slope, float p, PhiloxKey key) {
  const bool dropout = p > 0.0f;
  auto kernel = bias ? (dropout ? leaky_relu_dropout_rows<V, true, true, T> : leaky_relu_dropout_rows<V, true, false, T>)
                     : (dropout ? leaky_relu_dropout_rows<V, false, true, T> : leaky_relu_dropout_rows<V, false, false, T>);
  kernel(pre, bias, out, row_begin, row_end, cols, negative_slope, p, key);
}

template <class V, bool kDropout, class T>
void grad_pre_range(const T* grad_y, const T* y, T* grad_pre, int64_t begin, int64_t end, float negative_slope, float p,
                    PhiloxKey key) {
  using F = typename V::F;
  const PhiloxSchedule schedule(key);
  const F zero = V::set1(0.0f), one = V::set1(1.0f), slope = V::set1(negative_slope), p_v = V::set1(p),
          keep_prob = V::set1(1.0f - p);
  for (int64_t i = begin; i < end; i += V::W) {
    const int n = lanes_left<V>(i, end);
    F d = V::select(V::gt(load<V>(y + i, n), zero), one, slope);
    if constexpr (kDropout) {
      d = V::select(keep_lanes<V>(schedule, static_cast<uint64_t>(i), p_v), V::div(d, keep_prob), zero);
    }
    store<V>(grad_pre + i, V::mul(load<V>(grad_y + i, n), d), n);
  }
}

template <class V, class T>
void leaky_relu_dropout_grad_pre(const T* grad_y, const T* y, T* grad_pre, int64_t begin, int64_t end,
                                 float negative_slope, float p, PhiloxKey key) {
  (p > 0.0f ? grad_pre_range<V, true, T> : grad_pre_range<V, false, T>)(grad_y, y, grad_pre, begin, end, negative_slope,
                                                                         p, key);
}

// ---- the draws themselves -----------------------------------------------------------------------------

template <class V>
void keep_mask(uint8_t* out, int64_t begin, int64_t end, float p, PhiloxKey key) {
  const PhiloxSchedule schedule(key);
  const typename V::F p_v = V::set1(p);
  for (int64_t i = begin; i < end; i += V::W) {
    const int n = lanes_left<V>(i, end);
    V::store_bytes01(out + i, keep_lanes<V>(schedule, static_cast<uint64_t>(i), p_v), n);
  }
}

template <class V>
void normal(float* out, int64_t begin, int64_t end, PhiloxKey key) {
  const PhiloxSchedule schedule(key);
  for (int64_t i = begin; i < end; i += V::W) {
    V::storen(out + i, normal_lanes<V>(schedule, static_cast<uint64_t>(i)), lanes_left<V>(i, end));
  }
}

// ---- reparameterize ---------------------------------------------------------------------------------

template <class V, bool kEps>
void reparameterize_range(const float* mu, const float* logvar, const float* eps, float* z, int64_t begin,
                          int64_t end, PhiloxKey key) {
  using F = typename V::F;
  const PhiloxSchedule schedule(key);
  for (int64_t i = begin; i < end; i += V::W) {
    const int n = lanes_left<V>(i, end);
    const F e = kEps ? V::loadn(eps + i, n) : normal_lanes<V>(schedule, static_cast<uint64_t>(i));
    const F std = exp_v<V>(V::mul(V::set1(0.5f), V::loadn(logvar + i, n)));
    V::storen(z + i, V::add(V::loadn(mu + i, n), V::mul(std, e)), n);
  }
}

template <class V>
void reparameterize(const float* mu, const float* logvar, const float* eps, float* z, int64_t begin, int64_t end,
                    PhiloxKey key) {
  (eps ? reparameterize_range<V, true> : reparameterize_range<V, false>)(mu, logvar, eps, z, begin, end, key);
}

template <class V, bool kEps>
void reparameterize_grad_logvar_range(const float* grad_z, const float* logvar, const float* eps, float* grad_logvar,
                                      int64_t begin, int64_t end, PhiloxKey key) {
  using F = typename V::F;
  const PhiloxSchedule schedule(key);
  const F half = V::set1(0.5f);
  for (int64_t i = begin; i < end; i += V::W) {
    const int n = lanes_left<V>(i, end);
    const F e = kEps ? V::loadn(eps + i, n) : normal_lanes<V>(schedule, static_cast<uint64_t>(i));
    const F std = exp_v<V>(V::mul(half, V::loadn(logvar + i, n)));
    V::storen(grad_logvar + i, V::mul(V::mul(V::mul(half, V::loadn(grad_z + i, n)), std), e), n);
  }
}

template <class V>
void reparameterize_grad_logvar(const float* grad_z, const float* logvar, const float* eps, float* grad_logvar,
                                int64_t begin, int64_t end, PhiloxKey key) {
  (eps ? reparameterize_grad_logvar_range<V, true> : reparameterize_grad_logvar_range<V, false>)(
      grad_z, logvar, eps, grad_logvar, begin, end, key);
}

// ---- bce_kl_loss --------------------------------------------------------------------------------------

template <class V, class T>
void bce_kl_loss(const T* logits, const float* target, const float* mu, const float* logvar, float* loss,
                 int64_t row_begin, int64_t row_end, int64_t D, int64_t L) {
  using F = typename V::F;
  const F zero = V::set1(0.0f), one = V::set1(1.0f), minus_half = V::set1(-0.5f);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const T* x_row = logits + r * D;
    const float* t_row = target + r * D;
    F bce_sum = zero;
    for (int64_t d = 0; d < D; d += V::W) {
      const int n = lanes_left<V>(d, D);
      const F x = load<V>(x_row + d, n), t = V::loadn(t_row + d, n);
      // max(x, 0) - x t + log(1 + exp(-|x|)): finite for any finite x.
      const F softplus_tail = log1p_nonnegative<V>(exp_v<V>(V::sub(zero, V::abs(x))));
      const F bce = V::add(V::sub(V::max(x, zero), V::mul(x, t)), softplus_tail);
      bce_sum = V::add(bce_sum, n == V::W ? bce : V::select(V::first_lanes(n), bce, zero));
    }
    const float* mu_row = mu + r * L;
    const float* lv_row = logvar + r * L;
    F kl_sum = zero;
    for (int64_t l = 0; l < L; l += V::W) {
      const int n = lanes_left<V>(l, L);
      const F m = V::loadn(mu_row + l, n), lv = V::loadn(lv_row + l, n);
      const F kl = V::mul(minus_half, V::sub(V::sub(V::add(one, lv), V::mul(m, m)), exp_v<V>(lv)));
      kl_sum = V::add(kl_sum, n == V::W ? kl : V::select(V::first_lanes(n), kl, zero));
    }
    loss[r] = V::reduce_add(bce_sum) + V::reduce_add(kl_sum);
  }
}

template <class V, class T>
void bce_kl_loss_backward(const float* grad_loss, const T* logits, const float* target, const float* mu,
                          const float* logvar, T* grad_logits, float* grad_mu, float* grad_logvar, int64_t row_begin,
                          int64_t row_end, int64_t D, int64_t L) {
  using F = typename V::F;
  const F zero = V::set1(0.0f), one = V::set1(1.0f), half = V::set1(0.5f);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const F g = V::set1(grad_loss[r]);
    for (int64_t d = 0; d < D; d += V::W) {
      const int n = lanes_left<V>(d, D);
      const int64_t at = r * D + d;
      const F x = load<V>(logits + at, n), t = V::loadn(target + at, n);
      const F sigmoid = V::div(one, V::add(one, exp_v<V>(V::sub(zero, x))));
      store<V>(grad_logits + at, V::mul(g, V::sub(sigmoid, t)), n);
    }
    const F g_half = V::mul(g, half);
    for (int64_t l = 0; l < L; l += V::W) {
      const int n = lanes_left<V>(l, L);
      const int64_t at = r * L + l;
      const F m = V::loadn(mu + at, n), lv = V::loadn(logvar + at, n);
      V::storen(grad_mu + at, V::mul(g, m), n);
      V::storen(grad_logvar + at, V::mul(g_half, V::sub(exp_v<V>(lv), one)), n);
    }
  }
}

// ---- Adam from float32 or bfloat16 gradients, writing a bfloat16 copy and moving the average in the same pass ----

// torch's lerp(a, b, w) on lanes: a + w (b - a) for |w| < 0.5, else b + (w - 1)(b - a), one fused multiply-add.
struct LerpWeight {
  bool small;
  float coefficient;
  explicit LerpWeight(float w) : small(__builtin_fabsf(w) < 0.5f), coefficient(small ? w : w - 1.0f) {}
};

template <class V>
inline typename V::F lerp_lanes(typename V::F a, typename V::F b, const LerpWeight& w, typename V::F coefficient) {
  return V::fma(coefficient, V::sub(b, a), w.small ? a : b);
}

template <class V, bool kBf16Grad, bool kCopy, bool kAverage, bool kScalarLoopRounding>
void adam_lanes(const AdamTensors& t, int64_t begin, int64_t end, const AdamConstants& c) {
  using F = typename V::F;
  const LerpWeight moment_weight(c.one_minus_beta1), average_weight(c.average_weight);
  const F moment_coefficient = V::set1(moment_weight.coefficient), average_coefficient = V::set1(average_weight.coefficient);
  const F beta2 = V::set1(c.beta2), grad_weight2 = V::set1(c.one_minus_beta2), step_size = V::set1(c.step_size),
          bc2_sqrt = V::set1(c.bias_correction2_sqrt), eps = V::set1(c.eps);
  for (int64_t i = begin; i < end; i += V::W) {
    const int n = lanes_left<V>(i, end);
    const F g = kBf16Grad ? load<V>(static_cast<const uint16_t*>(t.grad) + i, n)
                          : load<V>(static_cast<const float*>(t.grad) + i, n);
    const F m = lerp_lanes<V>(V::loadn(t.exp_avg + i, n), g, moment_weight, moment_coefficient);
    // beta2 v + (1 - beta2) g * g with one fused multiply-add, as torch's kernel computes it: its vector loop
    // rounds beta2 v first, its scalar loop (1 - beta2) g * g.
    const F v = kScalarLoopRounding ? V::fma(V::loadn(t.exp_avg_sq + i, n), beta2, V::mul(V::mul(g, grad_weight2), g))
                                    : V::fma(V::mul(g, grad_weight2), g, V::mul(V::loadn(t.exp_avg_sq + i, n), beta2));
    V::storen(t.exp_avg + i, m, n);
    V::storen(t.exp_avg_sq + i, v, n);
    const F denom = V::add(V::div(V::sqrt(v), bc2_sqrt), eps);
    const F p = V::sub(V::loadn(t.param + i, n), V::div(V::mul(step_size, m), denom));
    V::storen(t.param + i, p, n);
    if constexpr (kCopy) store<V>(t.copy + i, p, n);
    if constexpr (kAverage) {
      V::storen(t.average + i, lerp_lanes<V>(V::loadn(t.average + i, n), p, average_weight, average_coefficient), n);
    }
  }
}

template <class V, bool kBf16Grad, bool kCopy, bool kAverage>
void adam_range(const AdamTensors& t, int64_t begin, int64_t end, const AdamConstants& c) {
  const int64_t split = std::clamp(t.scalar_from, begin, end);
  adam_lanes<V, kBf16Grad, kCopy, kAverage, false>(t, begin, split, c);
  adam_lanes<V, kBf16Grad, kCopy, kAverage, true>(t, split, end, c);
}

template <class V, bool kBf16Grad>
void adam_for_grad(const AdamTensors& t, int64_t begin, int64_t end, const AdamConstants& c) {
  auto kernel = t.copy ? (t.average ? adam_range<V, kBf16Grad, true, true> : adam_range<V, kBf16Grad, true, false>)
                       : (t.average ? adam_range<V, kBf16Grad, false, true> : adam_range<V, kBf16Grad, false, false>);
  kernel(t, begin, end, c);
}

template <class V>
void adam(const AdamTensors& t, int64_t begin, int64_t end, const AdamConstants& c) {
  (t.grad_bf16 ? adam_for_grad<V, true> : adam_for_grad<V, false>)(t, begin, end, c);
}

template <class V>
constexpr KernelTable make_table(const char* name) {
  return KernelTable{name,
                     &leaky_relu_dropout<V, float>,
                     &leaky_relu_dropout_grad_pre<V, float>,
                     &leaky_relu_dropout<V, uint16_t>,
                     &leaky_relu_dropout_grad_pre<V, uint16_t>,
                     &keep_mask<V>,
                     &normal<V>,
                     &reparameterize<V>,
                     &reparameterize_grad_logvar<V>,
                     &bce_kl_loss<V, float>,
                     &bce_kl_loss_backward<V, float>,
                     &bce_kl_loss<V, uint16_t>,
                     &bce_kl_loss_backward<V, uint16_t>,
                     &adam<V>};
}

}  // namespace
}  // namespace fastgen_native
