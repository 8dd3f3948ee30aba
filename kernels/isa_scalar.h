// One lane: the portable instruction set of kernel_bodies.h (any CPU, any compiler flags).
//
// Every instruction set exposes the same static functions over F (floats), U (uint32 lanes) and M
// (lane masks), so kernel_bodies.h is written once. Comparisons are ordered (false on NaN) like C's;
// max(a, b) / min(a, b) return b when either is NaN, like x86's maxps / minps.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastgen_native {
namespace {

struct ScalarIsa {
  static constexpr int W = 1;
  using F = float;
  using U = uint32_t;
  using M = bool;

  static F loadn(const float* p, int) { return *p; }
  static void storen(float* p, F v, int) { *p = v; }
  static F set1(float v) { return v; }
  static U uset1(uint32_t v) { return v; }
  static U uload(const uint32_t* p) { return *p; }
  static U iota() { return 0; }

  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F div(F a, F b) { return a / b; }
  static F fma(F a, F b, F c) { return __builtin_fmaf(a, b, c); }
  static F max(F a, F b) { return a > b ? a : b; }
  static F min(F a, F b) { return a < b ? a : b; }
  static F sqrt(F a) { return __builtin_sqrtf(a); }
  static F abs(F a) { return as_f(as_u(a) & 0x7FFFFFFFu); }

  static M gt(F a, F b) { return a > b; }
  static M ge(F a, F b) { return a >= b; }
  static M lt(F a, F b) { return a < b; }
  static M eq(F a, F b) { return a == b; }
  static M isnan(F a) { return a != a; }
  static F select(M m, F a, F b) { return m ? a : b; }
  static M first_lanes(int n) { return n > 0; }
  static uint32_t bits(M m) { return m ? 1u : 0u; }
  static float reduce_add(F a) { return a; }

  static U uadd(U a, U b) { return a + b; }
  static U usub(U a, U b) { return a - b; }
  static U uand(U a, U b) { return a & b; }
  static U uor(U a, U b) { return a | b; }
  static U uxor(U a, U b) { return a ^ b; }
  template <int k> static U ushl(U a) { return a << k; }
  template <int k> static U ushr(U a) { return a >> k; }
  template <int k> static U usra(U a) { return static_cast<uint32_t>(static_cast<int32_t>(a) >> k); }
  static M ueq(U a, U b) { return a == b; }
  static U uselect(M m, U a, U b) { return m ? a : b; }

  static void philox_rounds(U& c0, U& c1, U& c2, U& c3, const uint32_t* k0, const uint32_t* k1, int rounds,
                            uint32_t round_a, uint32_t round_b) {
    for (int r = 0; r < rounds; ++r) {
      const uint64_t pb = static_cast<uint64_t>(round_b) * c2, pa = static_cast<uint64_t>(round_a) * c0;
      c0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0[r];
      c2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1[r];
      c1 = static_cast<uint32_t>(pb);
      c3 = static_cast<uint32_t>(pa);
    }
  }
  static void store_bytes01(uint8_t* p, M m, int) { *p = m ? 1 : 0; }
  // 16-bit words (bfloat16 bits) zero-extended into lanes, and lanes' low 16 bits stored, first n lanes.
  static U load_u16n(const uint16_t* p, int) { return *p; }
  static void store_u16n(uint16_t* p, U v, int) { *p = static_cast<uint16_t>(v); }

  static F cvt_i2f(U a) { return static_cast<float>(static_cast<int32_t>(a)); }
  // Round to the nearest integer in the current rounding mode (ties to even), as cvtps2dq does.
  static U cvt_f2i_round(F a) { return static_cast<uint32_t>(static_cast<int32_t>(__builtin_lrintf(a))); }
  static U as_u(F a) {
    U u;
    std::memcpy(&u, &a, sizeof u);
    return u;
  }
  static F as_f(U a) {
    F f;
    std::memcpy(&f, &a, sizeof f);
    return f;
  }
};

}  // namespace
}  // namespace fastgen_native
