// Sixteen lanes of AVX-512F: the instruction set of kernel_bodies.h (see isa_scalar.h for the contract).
// Include only from a translation unit compiled with -mavx512f; it needs nothing beyond AVX-512F.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fastgen_native {
namespace {

struct Avx512Isa {
  static constexpr int W = 16;
  using F = __m512;
  using U = __m512i;
  using M = __mmask16;

  static M first_lanes(int n) { return n >= W ? M(0xFFFF) : M((1u << n) - 1u); }
  static F loadn(const float* p, int n) {
    return n == W ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(first_lanes(n), p);
  }
  static void storen(float* p, F v, int n) {
    if (n == W) {
      _mm512_storeu_ps(p, v);
    } else {
      _mm512_mask_storeu_ps(p, first_lanes(n), v);
    }
  }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static U uset1(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static U uload(const uint32_t* p) { return _mm512_loadu_si512(p); }
  static U iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }

  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F sqrt(F a) { return _mm512_sqrt_ps(a); }
  static F abs(F a) { return as_f(_mm512_and_epi32(as_u(a), _mm512_set1_epi32(0x7FFFFFFF))); }

  static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M ge(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M eq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M isnan(F a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
  static uint32_t bits(M m) { return static_cast<uint32_t>(m); }
  static float reduce_add(F a) {
    const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(a),
                                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  static U uadd(U a, U b) { return _mm512_add_epi32(a, b); }
  static U usub(U a, U b) { return _mm512_sub_epi32(a, b); }
  static U uand(U a, U b) { return _mm512_and_epi32(a, b); }
  static U uor(U a, U b) { return _mm512_or_epi32(a, b); }
  static U uxor(U a, U b) { return _mm512_xor_epi32(a, b); }
  template <int k> static U ushl(U a) { return _mm512_slli_epi32(a, k); }
  template <int k> static U ushr(U a) { return _mm512_srli_epi32(a, k); }
  template <int k> static U usra(U a) { return _mm512_srai_epi32(a, k); }
  static M ueq(U a, U b) { return _mm512_cmpeq_epi32_mask(a, b); }
  static U uselect(M m, U a, U b) { return _mm512_mask_blend_epi32(m, b, a); }

  // Philox-4x32 rounds on 16 counters: even and odd lanes run as two chains of eight 64-bit lanes, each
  // 32-bit word in the low half (one 32x32->64 multiply gives both halves of a product; the high halves
  // hold garbage that no multiply reads), and are interleaved back at the end.
  static void philox_rounds(U& c0, U& c1, U& c2, U& c3, const uint32_t* k0, const uint32_t* k1, int rounds,
                            uint32_t round_a, uint32_t round_b) {
    const __m512i a = _mm512_set1_epi64(round_a), b = _mm512_set1_epi64(round_b);
    __m512i e[4] = {c0, c1, c2, c3};
    __m512i o[4] = {_mm512_srli_epi64(c0, 32), _mm512_srli_epi64(c1, 32), _mm512_srli_epi64(c2, 32),
                    _mm512_srli_epi64(c3, 32)};
#pragma GCC unroll 10
    for (int r = 0; r < rounds; ++r) {
      const __m512i key0 = _mm512_set1_epi32(static_cast<int>(k0[r]));
      const __m512i key1 = _mm512_set1_epi32(static_cast<int>(k1[r]));
      const auto round = [&](__m512i* c) {
        const __m512i pb = _mm512_mul_epu32(c[2], b), pa = _mm512_mul_epu32(c[0], a);
        c[0] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pb, 32), c[1], key0, 0x96);  // a ^ b ^ c
        c[2] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(pa, 32), c[3], key1, 0x96);
        c[1] = pb;
        c[3] = pa;
      };
      round(e);
      round(o);
    }
    c0 = _mm512_mask_blend_epi32(0xAAAA, e[0], _mm512_slli_epi64(o[0], 32));
    c1 = _mm512_mask_blend_epi32(0xAAAA, e[1], _mm512_slli_epi64(o[1], 32));
    c2 = _mm512_mask_blend_epi32(0xAAAA, e[2], _mm512_slli_epi64(o[2], 32));
    c3 = _mm512_mask_blend_epi32(0xAAAA, e[3], _mm512_slli_epi64(o[3], 32));
  }
  // p[j] = m[j] ? 1 : 0 for the first n lanes.
  static void store_bytes01(uint8_t* p, M m, int n) {
    const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(m, _mm512_set1_epi32(1)));
    if (n == W) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bytes);
    } else {
      _mm512_mask_cvtepi32_storeu_epi8(p, first_lanes(n), _mm512_maskz_mov_epi32(m, _mm512_set1_epi32(1)));
    }
  }

  // 16-bit words (bfloat16 bits) zero-extended into lanes, and lanes' low 16 bits stored, first n lanes.
  static U load_u16n(const uint16_t* p, int n) {
    if (n == W) return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    alignas(32) uint16_t lanes[W] = {};  // a masked 16-bit load needs AVX-512BW, which this table does not assume
    for (int j = 0; j < n; ++j) lanes[j] = p[j];
    return _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(lanes)));
  }
  static void store_u16n(uint16_t* p, U v, int n) {
    if (n == W) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(v));
    } else {
      _mm512_mask_cvtepi32_storeu_epi16(p, first_lanes(n), v);
    }
  }

  static F cvt_i2f(U a) { return _mm512_cvtepi32_ps(a); }
  static U cvt_f2i_round(F a) { return _mm512_cvtps_epi32(a); }
  static U as_u(F a) { return _mm512_castps_si512(a); }
  static F as_f(U a) { return _mm512_castsi512_ps(a); }
};

}  // namespace
}  // namespace fastgen_native
