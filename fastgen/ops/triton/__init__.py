"""Triton kernels, one module per op, and the Philox draws they share."""
