// The row kernels of fastgen's native CPU ops, one table per instruction set.
//
// The kernels work on raw float32 pointers over a range of rows or elements and include no torch
// header: ops.cpp (compiled for the baseline x86-64) checks arguments, converts dtypes, allocates and
// splits the work across threads, then calls the table chosen once for this CPU. Each table lives in
// its own translation unit compiled for its instruction set, so no AVX code can leak into the others.
#pragma once

#include <cstdint>

namespace fastgen_native {

// The op's int64 key tensor (seed, step), read as unsigned 64-bit words.
struct PhiloxKey {
  uint64_t seed;
  uint64_t step;
};

// Adam's per-parameter constants, computed in double as torch's fused CPU Adam computes them, then rounded.
struct AdamConstants {
  float beta2, one_minus_beta1, one_minus_beta2;
  float step_size;              // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  float eps;
  float average_weight;         // the moving average's lerp weight (1 - decay), when there is one
};

// One parameter's tensors, as contiguous arrays of the same length.
struct AdamTensors {
  float* param;
  const void* grad;  // float32, or bfloat16 bits when grad_bf16
  bool grad_bf16;
  float* exp_avg;
  float* exp_avg_sq;
  uint16_t* copy;  // bfloat16 bits, or null
  float* average;  // the parameter's moving average, or null
  // From this element on, the second moment rounds as in torch's scalar loop, which updates what is left
  // after torch's whole vectors (the last numel % 8), so that every element matches torch's.
  int64_t scalar_from;
};

struct KernelTable {
  const char* name;  // "avx512", "avx2" or "scalar"

  // out[r, c] = dropout(leaky_relu(pre[r, c] + bias[c])) for rows [row_begin, row_end) of a contiguous
  // (rows, cols) matrix; bias may be null; p == 0 draws nothing. out may alias pre.
  void (*leaky_relu_dropout)(const float* pre, const float* bias, float* out, int64_t row_begin, int64_t row_end,
                             int64_t cols, float negative_slope, float p, PhiloxKey key);
  // grad_pre[i] = grad_y[i] * (y[i] > 0 ? 1 : slope) * (keep(i) ? 1 / (1 - p) : 0) for i in [begin, end).
  void (*leaky_relu_dropout_grad_pre)(const float* grad_y, const float* y, float* grad_pre, int64_t begin, int64_t end,
                                      float negative_slope, float p, PhiloxKey key);
  // The same two on bfloat16 bits (uint16_t) in and out: computed in float32, each result rounded once.
  void (*leaky_relu_dropout_bf16)(const uint16_t* pre, const uint16_t* bias, uint16_t* out, int64_t row_begin,
                                  int64_t row_end, int64_t cols, float negative_slope, float p, PhiloxKey key);
  void (*leaky_relu_dropout_grad_pre_bf16)(const uint16_t* grad_y, const uint16_t* y, uint16_t* grad_pre, int64_t begin,
                                           int64_t end, float negative_slope, float p, PhiloxKey key);
  // out[i] = keep(i) (1 or 0) for i in [begin, end).
  void (*keep_mask)(uint8_t* out, int64_t begin, int64_t end, float p, PhiloxKey key);
  // out[i] = the standard-normal draw of element i.
  void (*normal)(float* out, int64_t begin, int64_t end, PhiloxKey key);
  // z[i] = mu[i] + exp(0.5 logvar[i]) * eps[i]; eps null: drawn (normal of element i).
  void (*reparameterize)(const float* mu, const float* logvar, const float* eps, float* z, int64_t begin, int64_t end,
                         PhiloxKey key);
  // grad_logvar[i] = 0.5 * grad_z[i] * exp(0.5 logvar[i]) * eps[i]; eps null: regenerated.
  void (*reparameterize_grad_logvar)(const float* grad_z, const float* logvar, const float* eps, float* grad_logvar,
                                     int64_t begin, int64_t end, PhiloxKey key);
  // loss[r] = sum_d bce_with_logits(logits[r, d], target[r, d]) + sum_l kl(mu[r, l], logvar[r, l]).
  void (*bce_kl_loss)(const float* logits, const float* target, const float* mu, const float* logvar, float* loss,
                      int64_t row_begin, int64_t row_end, int64_t D, int64_t L);
  // grad_logits = g (sigmoid(x) - t), grad_mu = g mu, grad_logvar = g 0.5 (exp(logvar) - 1), g = grad_loss[r].
  void (*bce_kl_loss_backward)(const float* grad_loss, const float* logits, const float* target, const float* mu,
                               const float* logvar, float* grad_logits, float* grad_mu, float* grad_logvar,
                               int64_t row_begin, int64_t row_end, int64_t D, int64_t L);
  // The same two with bfloat16 logits (and, backward, bfloat16 grad_logits): float32 math, each result rounded once.
  void (*bce_kl_loss_bf16)(const uint16_t* logits, const float* target, const float* mu, const float* logvar,
                           float* loss, int64_t row_begin, int64_t row_end, int64_t D, int64_t L);
  void (*bce_kl_loss_backward_bf16)(const float* grad_loss, const uint16_t* logits, const float* target,
                                    const float* mu, const float* logvar, uint16_t* grad_logits, float* grad_mu,
                                    float* grad_logvar, int64_t row_begin, int64_t row_end, int64_t D, int64_t L);
  // Adam on elements [begin, end) of one float32 parameter, rounded as torch's fused CPU Adam rounds:
  // m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g g; param -= step_size m / (sqrt(v) / bc2_sqrt + eps).
  // Then, in the same pass, the copy = the updated parameter rounded to bfloat16 (nearest even, as a cast), and
  // the average = lerp(average, param, average_weight) (as torch's lerp), for those that are not null.
  void (*adam)(const AdamTensors& t, int64_t begin, int64_t end, const AdamConstants& c);
};

// Defined in kernels_scalar.cpp / kernels_avx2.cpp / kernels_avx512.cpp (the last two on x86-64 only).
extern const KernelTable scalar_kernels;
extern const KernelTable avx2_kernels;
extern const KernelTable avx512_kernels;

}  // namespace fastgen_native
