// Philox-4x32-10 as Triton's tl.random.philox draws it, for any instruction set of kernel_bodies.h.
//
// Key (k0, k1) = (seed lo, seed hi); counter (c0, c1, c2, c3) = (block lo, block hi, step lo, step hi).
// A draw depends only on (seed, step, element), so a backward regenerates its forward's mask.
#pragma once

#include <cstdint>

#include "kernel_table.h"

namespace fastgen_native {
namespace {

constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;
// tl.random.uint_to_uniform_float's scale for 32-bit words: the largest with INT32_MAX * scale < 1.
constexpr float kUniformScale = 4.6566127342e-10f;

// ---- The one place that says which Philox output serves element i of an op's contiguous output. ----
// The Triton kernels (fastgen/ops/triton/philox.py) run one Philox block per element: counter block i;
// a dropout keep-mask reads word 0, the normal's Box-Muller pair reads words 0 and 1. If the kernels
// change to K consecutive elements per block, set kElementsPerBlock = K: element i then reads block
// i / K, word i % K (the words of a pair are word and word + 1, mod 4).
constexpr uint64_t kElementsPerBlock = 1;

struct PhiloxSlot {
  uint64_t block;
  uint32_t word;
};
constexpr PhiloxSlot philox_slot(uint64_t element) {
  return {element / kElementsPerBlock, static_cast<uint32_t>(element % kElementsPerBlock)};
}

// The ten round keys of one op call, shared by all its blocks.
struct PhiloxSchedule {
  uint32_t k0[kPhiloxRounds];
  uint32_t k1[kPhiloxRounds];
  uint32_t step_lo, step_hi;

  explicit PhiloxSchedule(PhiloxKey key)
      : step_lo(static_cast<uint32_t>(key.step)), step_hi(static_cast<uint32_t>(key.step >> 32)) {
    uint32_t a = static_cast<uint32_t>(key.seed), b = static_cast<uint32_t>(key.seed >> 32);
    for (int r = 0; r < kPhiloxRounds; ++r) {
      k0[r] = a;
      k1[r] = b;
      a += kPhiloxKeyA;
      b += kPhiloxKeyB;
    }
  }
};

// The four output words of the blocks that serve elements first .. first + W - 1, and which word each
// element's slot names.
template <class V>
struct PhiloxLanes {
  typename V::U word[4];
  typename V::U which;
};

template <class V>
inline PhiloxLanes<V> philox_lanes(const PhiloxSchedule& s, uint64_t first) {
  using U = typename V::U;
  U c0, c1, which = V::uset1(0);
  const uint32_t first_lo = static_cast<uint32_t>(first);
  if (kElementsPerBlock == 1 && first_lo <= 0xFFFFFFFFu - (V::W - 1)) {  // blocks first + j, no carry
    c0 = V::uadd(V::uset1(first_lo), V::iota());
    c1 = V::uset1(static_cast<uint32_t>(first >> 32));
  } else {
    alignas(64) uint32_t lo[V::W], hi[V::W], words[V::W];
    for (int j = 0; j < V::W; ++j) {
      const PhiloxSlot slot = philox_slot(first + static_cast<uint64_t>(j));
      lo[j] = static_cast<uint32_t>(slot.block);
      hi[j] = static_cast<uint32_t>(slot.block >> 32);
      words[j] = slot.word;
    }
    c0 = V::uload(lo);
    c1 = V::uload(hi);
    which = V::uload(words);
  }
  U c2 = V::uset1(s.step_lo), c3 = V::uset1(s.step_hi);
  V::philox_rounds(c0, c1, c2, c3, s.k0, s.k1, kPhiloxRounds, kPhiloxRoundA, kPhiloxRoundB);
  return {{c0, c1, c2, c3}, which};
}

// Word `slot word + offset` (mod 4) of each lane's block.
template <class V>
inline typename V::U philox_word(const PhiloxLanes<V>& lanes, uint32_t offset) {
  using U = typename V::U;
  if constexpr (kElementsPerBlock == 1) return lanes.word[offset];  // every slot names word 0
  const U which = V::uand(V::uadd(lanes.which, V::uset1(offset)), V::uset1(3));
  U out = lanes.word[0];
  for (uint32_t w = 1; w < 4; ++w) out = V::uselect(V::ueq(which, V::uset1(w)), lanes.word[w], out);
  return out;
}

// tl.random.uint_to_uniform_float: the word as int32, negatives folded (~x), times the scale: [0, 1).
template <class V>
inline typename V::F uniform(typename V::U word) {
  const typename V::U folded = V::uxor(word, V::template usra<31>(word));
  return V::mul(V::cvt_i2f(folded), V::set1(kUniformScale));
}

// Dropout keep-mask of elements first .. first + W - 1: uniform >= p.
template <class V>
inline typename V::M keep_lanes(const PhiloxSchedule& s, uint64_t first, typename V::F p) {
  return V::ge(uniform<V>(philox_word(philox_lanes<V>(s, first), 0)), p);
}

}  // namespace
}  // namespace fastgen_native
