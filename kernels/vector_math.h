// exp, log, log1p and cos in float32 for any instruction set of kernel_bodies.h.
//
// Each reduces its argument with a two-part constant (fused multiply-adds) and evaluates a Taylor series
// in Horner form with fused multiply-adds, so every instruction set computes bit-identical results,
// within about 2 ulp of the exact value (tests/test_native.py compares with numpy over float32 ranges).
#pragma once

#include <cstdint>

namespace fastgen_native {
namespace {

constexpr double kLn2 = 0.693147180559945309417232121458;
constexpr float kLn2Hi = static_cast<float>(kLn2);
constexpr float kLn2Lo = static_cast<float>(kLn2 - static_cast<double>(kLn2Hi));
constexpr double kHalfPi = 1.57079632679489661923132169164;
constexpr float kHalfPiHi = static_cast<float>(kHalfPi);
constexpr float kHalfPiLo = static_cast<float>(kHalfPi - static_cast<double>(kHalfPiHi));

template <class V, int N>
inline typename V::F horner(typename V::F x, const float (&c)[N]) {  // c[0] + c[1] x + ... + c[N-1] x^(N-1)
  typename V::F acc = V::set1(c[N - 1]);
#pragma GCC unroll 16
  for (int i = N - 2; i >= 0; --i) acc = V::fma(acc, x, V::set1(c[i]));
  return acc;
}

// e^x: x = k ln2 + r with |r| <= ln2 / 2; e^r by its Taylor series to r^7 (truncation < 0.05 ulp);
// 2^k applied in two halves so that results down to the smallest subnormal round once.
template <class V>
inline typename V::F exp_v(typename V::F x) {
  using F = typename V::F;
  using U = typename V::U;
  static constexpr float c[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
  const F clamped = V::min(V::max(x, V::set1(-104.0f)), V::set1(89.0f));  // beyond: 0 or inf
  const U k = V::cvt_f2i_round(V::mul(clamped, V::set1(static_cast<float>(1.0 / kLn2))));
  const F kf = V::cvt_i2f(k);
  F r = V::fma(kf, V::set1(-kLn2Hi), clamped);
  r = V::fma(kf, V::set1(-kLn2Lo), r);
  const F p = horner<V>(r, c);
  const U k1 = V::template usra<1>(k);
  const U k2 = V::usub(k, k1);
  const F s1 = V::as_f(V::template ushl<23>(V::uadd(k1, V::uset1(127))));
  const F s2 = V::as_f(V::template ushl<23>(V::uadd(k2, V::uset1(127))));
  return V::select(V::isnan(x), x, V::mul(V::mul(p, s1), s2));
}

// log x: x = 2^e m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172,
// by its series to s^11 (truncation < 0.01 ulp). Subnormals, 0, negatives, inf and NaN as C's logf.
template <class V>
inline typename V::F log_v(typename V::F x) {
  using F = typename V::F;
  using U = typename V::U;
  static constexpr float c[6] = {1.0f, 1.0f / 3, 1.0f / 5, 1.0f / 7, 1.0f / 9, 1.0f / 11};
  const typename V::M subnormal = V::lt(x, V::set1(1.17549435e-38f));
  const F xs = V::select(subnormal, V::mul(x, V::set1(8388608.0f)), x);  // * 2^23
  const U bits = V::as_u(xs);
  U e = V::usub(V::template ushr<23>(bits), V::uset1(127));
  e = V::uselect(subnormal, V::usub(e, V::uset1(23)), e);
  F m = V::as_f(V::uor(V::uand(bits, V::uset1(0x007FFFFFu)), V::uset1(0x3F800000u)));  // [1, 2)
  const typename V::M high = V::gt(m, V::set1(1.41421356f));
  m = V::select(high, V::mul(m, V::set1(0.5f)), m);
  e = V::uselect(high, V::uadd(e, V::uset1(1)), e);
  const F ef = V::cvt_i2f(e);
  const F s = V::div(V::sub(m, V::set1(1.0f)), V::add(m, V::set1(1.0f)));
  const F log_m = V::mul(V::add(s, s), horner<V>(V::mul(s, s), c));
  F out = V::fma(ef, V::set1(kLn2Hi), V::fma(ef, V::set1(kLn2Lo), log_m));
  const float inf = __builtin_inff();
  out = V::select(V::eq(x, V::set1(0.0f)), V::set1(-inf), out);
  out = V::select(V::lt(x, V::set1(0.0f)), V::set1(__builtin_nanf("")), out);
  out = V::select(V::eq(x, V::set1(inf)), x, out);
  return V::select(V::isnan(x), x, out);
}

// log(1 + x) for x >= 0 (or NaN), accurate for small x: log(u) * x / (u - 1) with u = 1 + x (u - 1 exact).
template <class V>
inline typename V::F log1p_nonnegative(typename V::F x) {
  const typename V::F u = V::add(V::set1(1.0f), x);
  const typename V::F d = V::sub(u, V::set1(1.0f));
  return V::select(V::eq(d, V::set1(0.0f)), x, V::mul(log_v<V>(u), V::div(x, d)));
}

// cos x for |x| up to a few hundred (Box-Muller passes [0, 2 pi)): x = q pi/2 + r, |r| <= pi/4 (about);
// cos r or sin r by their Taylor series to r^10 / r^9, sign and choice by q mod 4.
template <class V>
inline typename V::F cos_v(typename V::F x) {
  using F = typename V::F;
  using U = typename V::U;
  static constexpr float cc[6] = {1.0f, -1.0f / 2, 1.0f / 24, -1.0f / 720, 1.0f / 40320, -1.0f / 3628800};
  static constexpr float sc[5] = {1.0f, -1.0f / 6, 1.0f / 120, -1.0f / 5040, 1.0f / 362880};
  const U q = V::cvt_f2i_round(V::mul(x, V::set1(static_cast<float>(1.0 / kHalfPi))));
  const F qf = V::cvt_i2f(q);
  F r = V::fma(qf, V::set1(-kHalfPiHi), x);
  r = V::fma(qf, V::set1(-kHalfPiLo), r);
  const F z = V::mul(r, r);
  const F cos_r = horner<V>(z, cc);
  const F sin_r = V::mul(r, horner<V>(z, sc));
  const F v = V::select(V::ueq(V::uand(q, V::uset1(1)), V::uset1(1)), sin_r, cos_r);
  const U sign = V::template ushl<30>(V::uand(V::uadd(q, V::uset1(1)), V::uset1(2)));  // q mod 4 in {1, 2}
  return V::as_f(V::uxor(V::as_u(v), sign));
}

}  // namespace
}  // namespace fastgen_native
