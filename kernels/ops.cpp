// The CPU implementations of the fastgen_native:: ops: argument checks, dtype conversion, output
// allocation and the split across threads; the arithmetic is in the kernel table chosen for this CPU.
//
// Schemas and fake kernels live in fastgen/ops/native.py: this library holds only
// TORCH_LIBRARY_IMPL(fastgen_native, CPU, ...), so loading it twice is harmless.
//
// Inputs may be float32, float16 or bfloat16 and any layout: they are converted to contiguous float32
// (a no-op for contiguous float32), computed in float32 and the result rounded once to the input's dtype.
// The linear epilogue and its backward read and write contiguous bfloat16 as it is (the same numbers, no copies).
// Random draws follow element index = flat index of the contiguous output, as in the Triton kernels; for stacked
// replicas (a key (S, 2): one row per replica, any 2-D key counts as stacked) the index within the replica.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernel_table.h"

namespace fastgen_native {
namespace {

// Elements per thread task: the ops that run Philox cost about ten times more per element.
constexpr int64_t kRandomGrain = 4096;
constexpr int64_t kPlainGrain = 32768;

#if defined(FASTGEN_X86_KERNELS)
const KernelTable* const kTables[] = {&avx512_kernels, &avx2_kernels, &scalar_kernels};
#else
const KernelTable* const kTables[] = {&scalar_kernels};
#endif

bool cpu_supports(const KernelTable* table) {
#if defined(FASTGEN_X86_KERNELS)
  __builtin_cpu_init();
  if (table == &avx512_kernels) return __builtin_cpu_supports("avx512f");
  if (table == &avx2_kernels) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return table == &scalar_kernels;
}

const KernelTable* best_table() {
  for (const KernelTable* table : kTables) {
    if (cpu_supports(table)) return table;
  }
  return &scalar_kernels;
}

std::atomic<const KernelTable*> g_active{nullptr};

const KernelTable& kernels() {
  const KernelTable* table = g_active.load(std::memory_order_acquire);
  if (table == nullptr) {
    table = best_table();
    g_active.store(table, std::memory_order_release);
  }
  return *table;
}

// ---- argument checks ------------------------------------------------------------------------------------

void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "fastgen_native::", op, ": ", name, " must be a CPU tensor, got ", t.device());
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, "fastgen_native::", op, ": ", name,
              " must be float32, float16 or bfloat16, got ", dtype);
}

void check_same_shape(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name,
                      const char* like_name) {
  TORCH_CHECK(t.sizes() == like.sizes(), "fastgen_native::", op, ": ", name, " has shape ", t.sizes(), " but ",
              like_name, " has shape ", like.sizes());
}

PhiloxKey read_key(const at::Tensor& key, const char* op) {
  TORCH_CHECK(key.device().is_cpu() && key.scalar_type() == at::kLong && key.numel() == 2, "fastgen_native::", op,
              ": key must be a CPU int64 tensor (seed, step), got ", key.scalar_type(), " ", key.sizes(), " on ",
              key.device());
  const at::Tensor k = key.contiguous();
  const int64_t* data = k.const_data_ptr<int64_t>();
  return {static_cast<uint64_t>(data[0]), static_cast<uint64_t>(data[1])};
}

// The keys of a call: key (2,), one for all of `t`; or stacked replicas, key (S, 2) and t (S, ...), one per replica.
std::vector<PhiloxKey> read_keys(const at::Tensor& key, const at::Tensor& t, const char* op) {
  if (key.dim() != 2) return {read_key(key, op)};
  TORCH_CHECK(key.size(1) == 2 && t.dim() >= 2 && t.size(0) == key.size(0), "fastgen_native::", op,
              ": stacked replicas take key (S, 2) and a tensor (S, ...), got key ", key.sizes(), " for ", t.sizes());
  std::vector<PhiloxKey> keys;
  for (int64_t s = 0; s < key.size(0); ++s) keys.push_back(read_key(key[s], op));
  return keys;
}

float check_p(double p, const char* op) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "fastgen_native::", op, ": p must be in [0, 1), got ", p);
  return static_cast<float>(p);
}

float check_slope(double slope, const char* op) {
  // A non-negative slope keeps the sign of the pre-activation, which the backward reads off the output.
  TORCH_CHECK(std::isfinite(slope) && slope >= 0.0, "fastgen_native::", op,
              ": negative_slope must be finite and >= 0, got ", slope);
  return static_cast<float>(slope);
}

at::Tensor float32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

at::Tensor empty_float32(at::IntArrayRef sizes) { return at::empty(sizes, at::TensorOptions().dtype(at::kFloat)); }

at::Tensor as_dtype(const at::Tensor& t, at::ScalarType dtype) { return t.scalar_type() == dtype ? t : t.to(dtype); }

template <class F>
void for_elements(int64_t n, int64_t grain, const F& f) {
  if (n > 0) at::parallel_for(0, n, grain, f);
}

// f(begin, end) over [0, n) in chunks that the threads take in turn until none is left, instead of one equal
// share each: for a pass bound by memory, where one thread's share can take far longer than the other's (its
// data in another core's cache, its core shared with another tenant), so an equal split waits for the slower.
template <class F>
void for_chunks_taken_in_turn(int64_t n, int64_t chunk, const F& f) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(chunks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) f(c * chunk, std::min(n, (c + 1) * chunk));
  });
}

// f(r, from, to) for each replica r whose part of [begin, end) is not empty, with indices counted within the
// replica (`each` per replica): one parallel loop covers stacked replicas, each drawing with its own key.
template <class F>
void by_replica(int64_t begin, int64_t end, int64_t each, const F& f) {
  TORCH_INTERNAL_ASSERT(each > 0, "by_replica: a replica of no elements");
  for (int64_t r = begin / each; r * each < end; ++r) {
    f(r, std::max(begin, r * each) - r * each, std::min(end, (r + 1) * each) - r * each);
  }
}

// ---- linear_leaky_relu_dropout: the epilogue on pre = x @ W.T, and the backward's dL/d(pre) --------------

// bfloat16 bits of a tensor that the bf16 kernels read or write as it is (no conversion).
const uint16_t* bf16_bits(const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>()); }
uint16_t* bf16_bits_out(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

bool is_plain_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 && t.is_contiguous(); }

// The epilogue's rows split across threads, on float32 or bfloat16 bits (T = uint16_t); out may be in. Stacked
// replicas (one key each) are consecutive blocks of rows, each with its own bias row.
template <class T>
void epilogue_rows(const T* in, const T* bias, T* out, int64_t numel, int64_t cols, float slope, float p,
                   const std::vector<PhiloxKey>& keys) {
  if (numel == 0 || cols == 0) return;
  const int64_t rows = numel / cols, each = rows / static_cast<int64_t>(keys.size());
  const int64_t grain = std::max<int64_t>(1, (p > 0.0f ? kRandomGrain : kPlainGrain) / cols);
  const KernelTable& k = kernels();
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    by_replica(begin, end, each, [&](int64_t r, int64_t from, int64_t to) {
      const T* in_r = in + r * each * cols;
      const T* bias_r = bias ? bias + r * cols : nullptr;
      T* out_r = out + r * each * cols;
      if constexpr (std::is_same_v<T, float>) {
        k.leaky_relu_dropout(in_r, bias_r, out_r, from, to, cols, slope, p, keys[r]);
      } else {
        k.leaky_relu_dropout_bf16(in_r, bias_r, out_r, from, to, cols, slope, p, keys[r]);
      }
    });
  });
}

void run_leaky_relu_dropout(const at::Tensor& pre32, const std::optional<at::Tensor>& bias, float* out,
                            float slope, float p, const std::vector<PhiloxKey>& keys) {
  const at::Tensor bias32 = bias.has_value() ? float32(*bias) : at::Tensor();
  epilogue_rows<float>(pre32.const_data_ptr<float>(), bias32.defined() ? bias32.const_data_ptr<float>() : nullptr, out,
                       pre32.numel(), pre32.size(-1), slope, p, keys);
}

// The epilogue on contiguous bfloat16 `pre` and `bias` (or none) into `out` (which may be `pre`), no conversion.
void run_leaky_relu_dropout_bf16(const at::Tensor& pre, const std::optional<at::Tensor>& bias, at::Tensor& out,
                                 float slope, float p, const std::vector<PhiloxKey>& keys) {
  epilogue_rows<uint16_t>(bf16_bits(pre), bias.has_value() ? bf16_bits(*bias) : nullptr, bf16_bits_out(out), pre.numel(),
                          pre.size(-1), slope, p, keys);
}

bool bf16_epilogue(const at::Tensor& pre, const std::optional<at::Tensor>& bias) {
  return is_plain_bf16(pre) && (!bias.has_value() || is_plain_bf16(*bias));
}

// Checks the epilogue's arguments and reads its keys: a single call's bias is (N,), stacked replicas' (S, N).
std::vector<PhiloxKey> check_epilogue_args(const at::Tensor& pre, const std::optional<at::Tensor>& bias,
                                           const at::Tensor& key, const char* op) {
  check_float(pre, op, "pre");
  TORCH_CHECK(pre.dim() >= 1, "fastgen_native::", op, ": pre must have at least one dimension");
  std::vector<PhiloxKey> keys = read_keys(key, pre, op);
  if (bias.has_value()) {
    check_float(*bias, op, "bias");
    const bool stacked = key.dim() == 2;
    const bool fits = bias->dim() == (stacked ? 2 : 1) && bias->size(-1) == pre.size(-1) &&
                      (!stacked || bias->size(0) == pre.size(0));
    TORCH_CHECK(fits, "fastgen_native::", op, ": bias has shape ", bias->sizes(), " but pre has shape ", pre.sizes(),
                stacked ? " (stacked replicas: bias (S, N))" : "");
  }
  return keys;
}

at::Tensor leaky_relu_dropout(const at::Tensor& pre, const std::optional<at::Tensor>& bias, const at::Tensor& key,
                              double negative_slope, double p) {
  const char* op = "leaky_relu_dropout";
  const std::vector<PhiloxKey> k = check_epilogue_args(pre, bias, key, op);
  const float slope = check_slope(negative_slope, op), p32 = check_p(p, op);
  if (bf16_epilogue(pre, bias)) {
    at::Tensor out = at::empty_like(pre);
    run_leaky_relu_dropout_bf16(pre, bias, out, slope, p32, k);
    return out;
  }
  const at::Tensor pre32 = float32(pre);
  at::Tensor out = empty_float32(pre.sizes());
  run_leaky_relu_dropout(pre32, bias, out.data_ptr<float>(), slope, p32, k);
  return as_dtype(out, pre.scalar_type());
}

void leaky_relu_dropout_(at::Tensor& pre, const std::optional<at::Tensor>& bias, const at::Tensor& key,
                         double negative_slope, double p) {
  const char* op = "leaky_relu_dropout_";
  const std::vector<PhiloxKey> k = check_epilogue_args(pre, bias, key, op);
  const float slope = check_slope(negative_slope, op), p32 = check_p(p, op);
  if (pre.scalar_type() == at::kFloat && pre.is_contiguous()) {
    run_leaky_relu_dropout(pre, bias, pre.data_ptr<float>(), slope, p32, k);
    return;
  }
  if (bf16_epilogue(pre, bias)) {
    run_leaky_relu_dropout_bf16(pre, bias, pre, slope, p32, k);
    return;
  }
  const at::Tensor pre32 = float32(pre);
  at::Tensor out = empty_float32(pre.sizes());
  run_leaky_relu_dropout(pre32, bias, out.data_ptr<float>(), slope, p32, k);
  pre.copy_(out);
}

at::Tensor leaky_relu_dropout_grad_pre(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& key,
                                       double negative_slope, double p) {
  const char* op = "leaky_relu_dropout_grad_pre";
  check_float(grad_y, op, "grad_y");
  check_float(y, op, "y");
  check_same_shape(grad_y, y, op, "grad_y", "y");
  const float slope = check_slope(negative_slope, op), p32 = check_p(p, op);
  const std::vector<PhiloxKey> k = read_keys(key, y, op);
  const int64_t grain = p32 > 0.0f ? kRandomGrain : kPlainGrain;
  const int64_t each = k.empty() ? 0 : y.numel() / static_cast<int64_t>(k.size());  // elements per replica
  const KernelTable& t = kernels();
  if (is_plain_bf16(grad_y) && is_plain_bf16(y)) {  // bfloat16 in and out, no conversion
    at::Tensor out = at::empty_like(y);
    const uint16_t *g = bf16_bits(grad_y), *yv = bf16_bits(y);
    uint16_t* o = bf16_bits_out(out);
    for_elements(y.numel(), grain, [&](int64_t begin, int64_t end) {
      by_replica(begin, end, each, [&](int64_t r, int64_t from, int64_t to) {
        t.leaky_relu_dropout_grad_pre_bf16(g + r * each, yv + r * each, o + r * each, from, to, slope, p32, k[r]);
      });
    });
    return out;
  }
  const at::Tensor g32 = float32(grad_y), y32 = float32(y);
  at::Tensor out = empty_float32(y.sizes());
  const float *g = g32.const_data_ptr<float>(), *yv = y32.const_data_ptr<float>();
  float* o = out.data_ptr<float>();
  for_elements(y.numel(), grain, [&](int64_t begin, int64_t end) {
    by_replica(begin, end, each, [&](int64_t r, int64_t from, int64_t to) {
      t.leaky_relu_dropout_grad_pre(g + r * each, yv + r * each, o + r * each, from, to, slope, p32, k[r]);
    });
  });
  return as_dtype(out, y.scalar_type());
}

// ---- the draws: dropout keep-mask and standard normal ------------------------------------------------------

std::vector<int64_t> concrete(c10::SymIntArrayRef shape, const char* op) {
  std::vector<int64_t> sizes;
  sizes.reserve(shape.size());
  for (const c10::SymInt& s : shape) {
    const int64_t v = s.guard_int(__FILE__, __LINE__);
    TORCH_CHECK(v >= 0, "fastgen_native::", op, ": shape must not be negative, got ", shape);
    sizes.push_back(v);
  }
  return sizes;
}

at::Tensor keep_mask(const at::Tensor& key, c10::SymIntArrayRef shape, double p) {
  const char* op = "keep_mask";
  const float p32 = check_p(p, op);
  const PhiloxKey k = read_key(key, op);
  at::Tensor out = at::empty(concrete(shape, op), at::TensorOptions().dtype(at::kByte));
  uint8_t* o = out.data_ptr<uint8_t>();
  const KernelTable& t = kernels();
  for_elements(out.numel(), kRandomGrain, [&](int64_t begin, int64_t end) { t.keep_mask(o, begin, end, p32, k); });
  return out;
}

at::Tensor normal(const at::Tensor& key, c10::SymIntArrayRef shape) {
  const char* op = "normal";
  const PhiloxKey k = read_key(key, op);
  at::Tensor out = empty_float32(concrete(shape, op));
  float* o = out.data_ptr<float>();
  const KernelTable& t = kernels();
  for_elements(out.numel(), kRandomGrain, [&](int64_t begin, int64_t end) { t.normal(o, begin, end, k); });
  return out;
}

// ---- reparameterize ----------------------------------------------------------------------------------

struct LatentArgs {
  at::Tensor logvar32, eps32;
  const float* eps = nullptr;
  PhiloxKey key{0, 0};
};

LatentArgs latent_args(const at::Tensor& like, const char* like_name, const at::Tensor& logvar,
                       const std::optional<at::Tensor>& eps, const at::Tensor& key, const char* op) {
  check_float(like, op, like_name);
  check_float(logvar, op, "logvar");
  check_same_shape(logvar, like, op, "logvar", like_name);
  LatentArgs args;
  args.logvar32 = float32(logvar);
  if (eps.has_value()) {
    check_float(*eps, op, "eps");
    check_same_shape(*eps, like, op, "eps", like_name);
    args.eps32 = float32(*eps);
    args.eps = args.eps32.const_data_ptr<float>();
  } else {
    args.key = read_key(key, op);  // eps given: the key is not read
  }
  return args;
}

at::Tensor reparameterize(const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
                          const at::Tensor& key) {
  const char* op = "reparameterize";
  const LatentArgs args = latent_args(mu, "mu", logvar, eps, key, op);
  const at::Tensor mu32 = float32(mu);
  at::Tensor z = empty_float32(mu.sizes());
  const float *m = mu32.const_data_ptr<float>(), *lv = args.logvar32.const_data_ptr<float>();
  float* o = z.data_ptr<float>();
  const KernelTable& t = kernels();
  for_elements(mu.numel(), args.eps ? kPlainGrain : kRandomGrain, [&](int64_t begin, int64_t end) {
    t.reparameterize(m, lv, args.eps, o, begin, end, args.key);
  });
  return as_dtype(z, mu.scalar_type());
}

at::Tensor reparameterize_grad_logvar(const at::Tensor& grad_z, const at::Tensor& logvar,
                                      const std::optional<at::Tensor>& eps, const at::Tensor& key) {
  const char* op = "reparameterize_grad_logvar";
  const LatentArgs args = latent_args(grad_z, "grad_z", logvar, eps, key, op);
  const at::Tensor g32 = float32(grad_z);
  at::Tensor out = empty_float32(logvar.sizes());
  const float *g = g32.const_data_ptr<float>(), *lv = args.logvar32.const_data_ptr<float>();
  float* o = out.data_ptr<float>();
  const KernelTable& t = kernels();
  for_elements(logvar.numel(), args.eps ? kPlainGrain : kRandomGrain, [&](int64_t begin, int64_t end) {
    t.reparameterize_grad_logvar(g, lv, args.eps, o, begin, end, args.key);
  });
  return as_dtype(out, logvar.scalar_type());
}

// ---- bce_kl_loss ---------------------------------------------------------------------------------------

struct LossShape {
  int64_t B, D, L;
};

LossShape check_loss_args(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& mu,
                          const at::Tensor& logvar, const char* op) {
  check_float(logits, op, "logits");
  check_float(target, op, "target");
  check_float(mu, op, "mu");
  check_float(logvar, op, "logvar");
  TORCH_CHECK(logits.dim() >= 1, "fastgen_native::", op, ": logits must be (B, ...), got a 0-d tensor");
  check_same_shape(target, logits, op, "target", "logits");
  TORCH_CHECK(mu.dim() == 2, "fastgen_native::", op, ": mu must be 2-D (B, L), got shape ", mu.sizes());
  check_same_shape(logvar, mu, op, "logvar", "mu");
  const int64_t B = logits.size(0);
  TORCH_CHECK(mu.size(0) == B, "fastgen_native::", op, ": logits has ", B, " rows but mu has ", mu.size(0));
  int64_t D = 1;
  for (int64_t i = 1; i < logits.dim(); ++i) D *= logits.size(i);
  return {B, D, mu.size(1)};
}

at::Tensor bce_kl_loss(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& mu,
                       const at::Tensor& logvar) {
  const char* op = "bce_kl_loss";
  const LossShape s = check_loss_args(logits, target, mu, logvar, op);
  const bool bf16_logits = is_plain_bf16(logits);  // read as they are (mixed precision's logits)
  const at::Tensor x = bf16_logits ? logits : float32(logits), t = float32(target), m = float32(mu), lv = float32(logvar);
  at::Tensor loss = empty_float32({s.B});
  const float *tp = t.const_data_ptr<float>(), *mp = m.const_data_ptr<float>(), *lvp = lv.const_data_ptr<float>();
  float* out = loss.data_ptr<float>();
  const KernelTable& k = kernels();
  // One exp and one log per pixel: about as dear per element as a Philox draw.
  const int64_t grain = std::max<int64_t>(1, kRandomGrain / std::max<int64_t>(1, s.D + s.L));
  for_elements(s.B, grain, [&](int64_t begin, int64_t end) {
    if (bf16_logits) {
      k.bce_kl_loss_bf16(bf16_bits(x), tp, mp, lvp, out, begin, end, s.D, s.L);
    } else {
      k.bce_kl_loss(x.const_data_ptr<float>(), tp, mp, lvp, out, begin, end, s.D, s.L);
    }
  });
  return loss;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_kl_loss_backward(const at::Tensor& grad_loss,
                                                                    const at::Tensor& logits,
                                                                    const at::Tensor& target, const at::Tensor& mu,
                                                                    const at::Tensor& logvar) {
  const char* op = "bce_kl_loss_backward";
  const LossShape s = check_loss_args(logits, target, mu, logvar, op);
  check_float(grad_loss, op, "grad_loss");
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == s.B, "fastgen_native::", op,
              ": grad_loss must be (B,) = (", s.B, ",), got shape ", grad_loss.sizes());
  const bool bf16_logits = is_plain_bf16(logits);  // read, and their gradient written, as bfloat16
  const at::Tensor g = float32(grad_loss), x = bf16_logits ? logits : float32(logits), t = float32(target),
                   m = float32(mu), lv = float32(logvar);
  at::Tensor grad_logits = bf16_logits ? at::empty_like(logits) : empty_float32(logits.sizes()),
             grad_mu = empty_float32(mu.sizes()), grad_logvar = empty_float32(logvar.sizes());
  const float *gp = g.const_data_ptr<float>(), *tp = t.const_data_ptr<float>(), *mp = m.const_data_ptr<float>(),
              *lvp = lv.const_data_ptr<float>();
  float *gm = grad_mu.data_ptr<float>(), *glv = grad_logvar.data_ptr<float>();
  const KernelTable& k = kernels();
  const int64_t grain = std::max<int64_t>(1, kRandomGrain / std::max<int64_t>(1, s.D + s.L));
  for_elements(s.B, grain, [&](int64_t begin, int64_t end) {
    if (bf16_logits) {
      uint16_t* gx = bf16_bits_out(grad_logits);
      k.bce_kl_loss_backward_bf16(gp, bf16_bits(x), tp, mp, lvp, gx, gm, glv, begin, end, s.D, s.L);
    } else {
      k.bce_kl_loss_backward(gp, x.const_data_ptr<float>(), tp, mp, lvp, grad_logits.data_ptr<float>(), gm, glv, begin,
                             end, s.D, s.L);
    }
  });
  return {as_dtype(grad_logits, logits.scalar_type()), as_dtype(grad_mu, mu.scalar_type()),
          as_dtype(grad_logvar, logvar.scalar_type())};
}

// ---- Adam: one pass over every parameter of an optimizer --------------------------------------------------

void check_adam_state(const at::Tensor& t, const at::Tensor& param, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous(), "fastgen_native::adam_: ", name,
              " must be a contiguous CPU ", dtype, " tensor, got ", t.scalar_type(), " on ", t.device());
  check_same_shape(t, param, "adam_", name, "its parameter");
}

AdamConstants adam_constants(double lr, double beta1, double beta2, double eps, double step, float average_weight) {
  // In double and in this order, as torch's fused CPU Adam computes them.
  const double bias_correction1 = 1 - std::pow(beta1, step), bias_correction2 = 1 - std::pow(beta2, step);
  return {static_cast<float>(beta2),
          static_cast<float>(1 - beta1),
          static_cast<float>(1 - beta2),
          static_cast<float>(lr / bias_correction1),
          static_cast<float>(std::sqrt(bias_correction2)),
          static_cast<float>(eps),
          average_weight};
}

// A one-element float32 CPU tensor (a step counter, the learning rate, the average's weight), checked.
float* scalar(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.numel() == 1, "fastgen_native::adam_: ", name,
              " must be a one-element float32 CPU tensor, got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
  return t.data_ptr<float>();
}

// Where torch's fused CPU Adam (its AVX2 and AVX-512 kernels) switches to its scalar loop in a tensor: after the
// last whole 8 floats (its 16-wide vectors, then 8-wide ones for the rest; measured element by element).
constexpr int64_t kTorchAdamVectorFloats = 8;

// Adam for float32 parameters from float32 or bfloat16 gradients, each step counter counted up first; in the
// same pass each parameter's bfloat16 copy rewritten and its moving average moved towards it, where given.
void adam_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList steps, const at::Tensor& lr, double beta1, double beta2, double eps, at::TensorList copies,
           at::TensorList averages, const std::optional<at::Tensor>& average_weight) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n &&
                  (copies.empty() || copies.size() == n) && (averages.empty() || averages.size() == n),
              "fastgen_native::adam_: params, grads, exp_avgs, exp_avg_sqs, steps (and copies, averages, if any) "
              "must be lists of one length");
  TORCH_CHECK(averages.empty() == !average_weight.has_value(),
              "fastgen_native::adam_: averages and average_weight come together");
  const double lr_value = *scalar(lr, "lr");
  const float average_value = average_weight.has_value() ? *scalar(*average_weight, "average_weight") : 0.0f;
  std::vector<at::Tensor> contiguous_grads(n);
  std::vector<AdamTensors> tensors(n);
  std::vector<float*> step_counters(n);
  std::vector<int64_t> starts{0};  // parameter i covers flat elements [starts[i], starts[i + 1])
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& param = params[i];
    check_adam_state(param, param, at::kFloat, "a parameter");
    check_adam_state(exp_avgs[i], param, at::kFloat, "exp_avg");
    check_adam_state(exp_avg_sqs[i], param, at::kFloat, "exp_avg_sq");
    if (!copies.empty()) check_adam_state(copies[i], param, at::kBFloat16, "a copy");
    if (!averages.empty()) check_adam_state(averages[i], param, at::kFloat, "an average");
    const auto grad_dtype = grads[i].scalar_type();
    TORCH_CHECK(grads[i].device().is_cpu() && (grad_dtype == at::kFloat || grad_dtype == at::kBFloat16),
                "fastgen_native::adam_: a gradient must be a float32 or bfloat16 CPU tensor, got ", grad_dtype);
    check_same_shape(grads[i], param, "adam_", "a gradient", "its parameter");
    contiguous_grads[i] = grads[i].contiguous();
    tensors[i] = {param.data_ptr<float>(),
                  contiguous_grads[i].const_data_ptr(),
                  grad_dtype == at::kBFloat16,
                  exp_avgs[i].data_ptr<float>(),
                  exp_avg_sqs[i].data_ptr<float>(),
                  copies.empty() ? nullptr : bf16_bits_out(copies[i]),
                  averages.empty() ? nullptr : averages[i].data_ptr<float>(),
                  param.numel() / kTorchAdamVectorFloats * kTorchAdamVectorFloats};
    step_counters[i] = scalar(steps[i], "a step");
    starts.push_back(starts.back() + param.numel());
  }
  // Every argument checked: only now count the steps, so that a refused call changes nothing.
  std::vector<AdamConstants> constants(n);
  for (size_t i = 0; i < n; ++i) {
    constants[i] = adam_constants(lr_value, beta1, beta2, eps, ++*step_counters[i], average_value);
  }
  const KernelTable& k = kernels();
  // One parallel loop over all parameters' elements, in chunks taken in turn (in the --amp VAE step an equal
  // split left one thread waiting at this pass's end; with chunks the step ran 1.04-1.08x faster interleaved in
  // one process, 0.99-1.04x in fresh processes on a calm machine, AMD EPYC): a chunk may span several tensors.
  for_chunks_taken_in_turn(starts.back(), kPlainGrain, [&](int64_t begin, int64_t end) {
    size_t i = std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin() - 1;
    for (; i < n && starts[i] < end; ++i) {
      const int64_t from = std::max(begin, starts[i]) - starts[i], to = std::min(end, starts[i + 1]) - starts[i];
      k.adam(tensors[i], from, to, constants[i]);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen_native, CPU, m) {
  m.impl("leaky_relu_dropout", &leaky_relu_dropout);
  m.impl("leaky_relu_dropout_", &leaky_relu_dropout_);
  m.impl("leaky_relu_dropout_grad_pre", &leaky_relu_dropout_grad_pre);
  m.impl("keep_mask", &keep_mask);
  m.impl("normal", &normal);
  m.impl("reparameterize", &reparameterize);
  m.impl("reparameterize_grad_logvar", &reparameterize_grad_logvar);
  m.impl("bce_kl_loss", &bce_kl_loss);
  m.impl("bce_kl_loss_backward", &bce_kl_loss_backward);
  m.impl("adam_", &adam_);
}

}  // namespace fastgen_native

// Plain C entry points for fastgen/ops/native.py (ctypes): which kernel table runs, and a switch for tests
// and benchmarks. Names are the tables' ("avx512", "avx2", "scalar").
extern "C" {

__attribute__((visibility("default"))) const char* fastgen_native_isa() { return fastgen_native::kernels().name; }

// The tables this CPU can run, best first, comma-separated.
__attribute__((visibility("default"))) const char* fastgen_native_supported_isas() {
  static const std::string names = [] {
    std::string joined;
    for (const fastgen_native::KernelTable* table : fastgen_native::kTables) {
      if (!fastgen_native::cpu_supports(table)) continue;
      if (!joined.empty()) joined.push_back(',');
      joined.append(table->name);
    }
    return joined;
  }();
  return names.c_str();
}

// Switch to the named table; returns 1, or 0 (and changes nothing) if it is unknown or this CPU lacks it.
__attribute__((visibility("default"))) int fastgen_native_set_isa(const char* name) {
  for (const fastgen_native::KernelTable* table : fastgen_native::kTables) {
    if (std::strcmp(table->name, name) == 0 && fastgen_native::cpu_supports(table)) {
      fastgen_native::g_active.store(table, std::memory_order_release);
      return 1;
    }
  }
  return 0;
}

// Tests only: the draws of elements [first, first + count) (keep-mask bytes, or float32 normals) into
// out[0 .. count), for element indices that no tensor reaches (the block counter's carry at 2^32).
__attribute__((visibility("default"))) void fastgen_native_draw_range(int normal, void* out, int64_t first,
                                                                      int64_t count, uint64_t seed, uint64_t step,
                                                                      float p) {
  const fastgen_native::KernelTable& table = fastgen_native::kernels();
  const fastgen_native::PhiloxKey key{seed, step};
  if (normal) {  // the kernels index out by element: shift the base so that element `first` lands on out[0]
    float* base = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(out) - first * sizeof(float));
    table.normal(base, first, first + count, key);
  } else {
    uint8_t* base = reinterpret_cast<uint8_t*>(reinterpret_cast<uintptr_t>(out) - first);
    table.keep_mask(base, first, first + count, p, key);
  }
}

}  // extern "C"
