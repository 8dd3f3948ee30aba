"""Philox-4x32-10 in numpy: the random stream fastgen's kernels promise, written independently of Triton.

Key (k0, k1) = seed (lo, hi); counter = (element index lo, hi, step lo, hi). The future native CPU
kernels must reproduce exactly this stream.
"""

import numpy as np

M32 = np.uint64(0xFFFFFFFF)
ROUND_A, ROUND_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
KEY_A, KEY_B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)


def philox_first_word(seed: int, step: int, n: int) -> np.ndarray:
    idx = np.arange(n, dtype=np.uint64)
    c0, c1 = idx & M32, idx >> np.uint64(32)
    c2 = np.full(n, step & 0xFFFFFFFF, dtype=np.uint64)
    c3 = np.full(n, (step >> 32) & 0xFFFFFFFF, dtype=np.uint64)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        prod_b, prod_a = ROUND_B * c2, ROUND_A * c0
        c0, c1, c2, c3 = ((prod_b >> np.uint64(32)) ^ c1 ^ k0, prod_b & M32, (prod_a >> np.uint64(32)) ^ c3 ^ k1, prod_a & M32)
        k0, k1 = (k0 + KEY_A) & M32, (k1 + KEY_B) & M32
    return c0.astype(np.uint32)


def keep_mask(seed: int, step: int, n: int, p: float) -> np.ndarray:
    """uint32 -> uniform [0, 1) as Triton does (int32 bit pattern, negatives folded), then u >= p."""
    x = philox_first_word(seed, step, n).view(np.int32)
    x = np.where(x < 0, ~x, x)
    u = x.astype(np.float32) * np.float32(4.6566127342e-10)
    return u >= np.float32(p)
