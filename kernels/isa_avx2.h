// Eight lanes of AVX2 + FMA: the instruction set of kernel_bodies.h (see isa_scalar.h for the contract).
// Include only from a translation unit compiled with -mavx2 -mfma.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fastgen_native {
namespace {

struct Avx2Isa {
  static constexpr int W = 8;
  using F = __m256;
  using U = __m256i;
  using M = __m256;  // all-ones lanes where true

  static __m256i lanes_below(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota()); }
  static F loadn(const float* p, int n) {
    return n == W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes_below(n));
  }
  static void storen(float* p, F v, int n) {
    if (n == W) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, lanes_below(n), v);
    }
  }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static U uset1(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static U uload(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static U iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }

  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  static F abs(F a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))); }

  static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M ge(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M eq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static M isnan(F a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static F select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }
  static M first_lanes(int n) { return _mm256_castsi256_ps(lanes_below(n)); }
  static uint32_t bits(M m) { return static_cast<uint32_t>(_mm256_movemask_ps(m)); }
  static float reduce_add(F a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  static U uadd(U a, U b) { return _mm256_add_epi32(a, b); }
  static U usub(U a, U b) { return _mm256_sub_epi32(a, b); }
  static U uand(U a, U b) { return _mm256_and_si256(a, b); }
  static U uor(U a, U b) { return _mm256_or_si256(a, b); }
  static U uxor(U a, U b) { return _mm256_xor_si256(a, b); }
  template <int k> static U ushl(U a) { return _mm256_slli_epi32(a, k); }
  template <int k> static U ushr(U a) { return _mm256_srli_epi32(a, k); }
  template <int k> static U usra(U a) { return _mm256_srai_epi32(a, k); }
  static M ueq(U a, U b) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)); }
  static U uselect(M m, U a, U b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m));
  }

  // Philox-4x32 rounds on 8 counters: even and odd lanes run as two chains of four 64-bit lanes, each
  // 32-bit word in the low half (one 32x32->64 multiply gives both halves of a product; the high halves
  // hold garbage that no multiply reads), and are interleaved back at the end.
  static void philox_rounds(U& c0, U& c1, U& c2, U& c3, const uint32_t* k0, const uint32_t* k1, int rounds,
                            uint32_t round_a, uint32_t round_b) {
    const __m256i a = _mm256_set1_epi64x(round_a), b = _mm256_set1_epi64x(round_b);
    __m256i e[4] = {c0, c1, c2, c3};
    __m256i o[4] = {_mm256_srli_epi64(c0, 32), _mm256_srli_epi64(c1, 32), _mm256_srli_epi64(c2, 32),
                    _mm256_srli_epi64(c3, 32)};
#pragma GCC unroll 10
    for (int r = 0; r < rounds; ++r) {
      const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0[r]));
      const __m256i key1 = _mm256_set1_epi32(static_cast<int>(k1[r]));
      const auto round = [&](__m256i* c) {
        const __m256i pb = _mm256_mul_epu32(c[2], b), pa = _mm256_mul_epu32(c[0], a);
        c[0] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pb, 32), c[1]), key0);
        c[2] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pa, 32), c[3]), key1);
        c[1] = pb;
        c[3] = pa;
      };
      round(e);
      round(o);
    }
    c0 = _mm256_blend_epi32(e[0], _mm256_slli_epi64(o[0], 32), 0xAA);
    c1 = _mm256_blend_epi32(e[1], _mm256_slli_epi64(o[1], 32), 0xAA);
    c2 = _mm256_blend_epi32(e[2], _mm256_slli_epi64(o[2], 32), 0xAA);
    c3 = _mm256_blend_epi32(e[3], _mm256_slli_epi64(o[3], 32), 0xAA);
  }
  // p[j] = m[j] ? 1 : 0 for the first n lanes.
  static void store_bytes01(uint8_t* p, M m, int n) {
    const __m256i ones = _mm256_srli_epi32(_mm256_castps_si256(m), 31);
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(ones), _mm256_extracti128_si256(ones, 1));
    const __m128i bytes = _mm_packus_epi16(words, words);
    if (n == W) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(p), bytes);
    } else {
      alignas(16) uint8_t lanes[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(lanes), bytes);
      for (int j = 0; j < n; ++j) p[j] = lanes[j];
    }
  }

  // 16-bit words (bfloat16 bits) zero-extended into lanes, and lanes' low 16 bits stored, first n lanes.
  static U load_u16n(const uint16_t* p, int n) {
    if (n == W) return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    alignas(16) uint16_t lanes[W] = {};
    for (int j = 0; j < n; ++j) lanes[j] = p[j];
    return _mm256_cvtepu16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(lanes)));
  }
  static void store_u16n(uint16_t* p, U v, int n) {
    // Lanes hold values below 2^16, so the unsigned-saturating pack keeps them; it packs within 128-bit
    // halves, and the permute brings the two halves' words together.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0xD8);
    const __m128i words = _mm256_castsi256_si128(packed);
    if (n == W) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), words);
    } else {
      alignas(16) uint16_t lanes[W];
      _mm_store_si128(reinterpret_cast<__m128i*>(lanes), words);
      for (int j = 0; j < n; ++j) p[j] = lanes[j];
    }
  }

  static F cvt_i2f(U a) { return _mm256_cvtepi32_ps(a); }
  static U cvt_f2i_round(F a) { return _mm256_cvtps_epi32(a); }
  static U as_u(F a) { return _mm256_castps_si256(a); }
  static F as_f(U a) { return _mm256_castsi256_ps(a); }
};

}  // namespace
}  // namespace fastgen_native
