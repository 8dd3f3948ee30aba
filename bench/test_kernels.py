"""Each fused op against the eager PyTorch composite: forward+backward, batch 64 / 512 / 4096, float32 and bfloat16,
with time and memory. A round is CALLS calls back to back and one
synchronisation, as a loop calls them (the interleaved comparison with the plain modules that the targets read is
bench/op_rivals.py).

GPU only: on the CPU the kernels run in Triton's numpy interpreter, whose timings mean nothing.
"""

import pytest
import torch

from fastgen.ops import bce_kl_loss, linear_leaky_relu_dropout, reparameterize
from fastgen.ops.reference import bce_kl_loss_reference, reparameterize_reference
from fastgen.ops.rng import philox_key

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="Triton kernel timings need a GPU (the CPU interpreter's are meaningless)"
    ),
]

BATCHES = [64, 512, 4096]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
VARIANTS = ["fastgen", "eager"]
CALLS = 20
IN_FEATURES, OUT_FEATURES, P, SLOPE, LATENT = 784, 1024, 0.3, 0.2, 16


def _linear_case(batch, dtype):
    x = torch.randn(batch, IN_FEATURES, device="cuda", dtype=dtype, requires_grad=True)
    w = (torch.randn(OUT_FEATURES, IN_FEATURES, device="cuda") / 28).to(dtype).requires_grad_(True)
    b = torch.zeros(OUT_FEATURES, device="cuda", dtype=dtype, requires_grad=True)
    key = philox_key(0, "cuda")

    def fastgen(x, w, b):
        return linear_leaky_relu_dropout(x, w, b, negative_slope=SLOPE, p=P, seed=key)

    def eager(x, w, b):  # what nn.Sequential(Linear, LeakyReLU, Dropout) does, with a fresh mask each call
        return torch.nn.functional.dropout(torch.nn.functional.leaky_relu(torch.nn.functional.linear(x, w, b), SLOPE), P)

    return (x, w, b), fastgen, eager


def _reparameterize_case(batch, dtype):
    mu = torch.randn(batch, LATENT, device="cuda", dtype=dtype, requires_grad=True)
    logvar = torch.randn(batch, LATENT, device="cuda", dtype=dtype, requires_grad=True)
    key = philox_key(0, "cuda")
    return (
        (mu, logvar),
        (lambda m, v: reparameterize(m, v, seed=key)),
        (lambda m, v: reparameterize_reference(m, v, torch.randn_like(m))),
    )


def _bce_kl_case(batch, dtype):
    logits = torch.randn(batch, IN_FEATURES, device="cuda", dtype=dtype, requires_grad=True)
    target = torch.rand(batch, IN_FEATURES, device="cuda", dtype=dtype)
    mu = torch.randn(batch, LATENT, device="cuda", dtype=dtype, requires_grad=True)
    logvar = torch.randn(batch, LATENT, device="cuda", dtype=dtype, requires_grad=True)
    return (
        (logits, mu, logvar),
        (lambda a, m, v: bce_kl_loss(a, target, m, v)),
        (lambda a, m, v: bce_kl_loss_reference(a, target, m, v)),
    )


CASES = {"linear_leaky_relu_dropout": _linear_case, "reparameterize": _reparameterize_case, "bce_kl_loss": _bce_kl_case}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", list(CASES))
def test_kernel(benchmark, record, op, batch, dtype, variant):
    inputs, fused, eager = CASES[op](batch, DTYPES[dtype])
    fn = {"fastgen": fused, "eager": eager}[variant]
    mode = "forward+backward"

    def call():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))

    def run():
        for _ in range(CALLS):
            call()
        torch.cuda.synchronize()

    for _ in range(3):  # Triton's builds and the fused linear's measured choice are not timed
        call()
    # Memory held between forward and backward (saved activations + output), and the step's peak.
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = fn(*inputs)
    saved = torch.cuda.memory_allocated() - before
    del out
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before

    benchmark.group = f"{op} {mode} batch {batch} {dtype}"
    benchmark.pedantic(run, rounds=10, warmup_rounds=1, iterations=1)
    benchmark.extra_info["us_per_call"] = benchmark.stats.stats.median / CALLS * 1e6
    record(
        variant=variant,
        role="reference" if variant == "eager" else "variant",
        op=op,
        batch=batch,
        dtype=dtype,
        mode=mode,
        calls_per_round=CALLS,
        saved_mib=saved / 2**20,
        peak_mib=peak / 2**20,
    )
