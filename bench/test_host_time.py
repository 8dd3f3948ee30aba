"""Host time of one forward+backward call of each fused op and layer on the CPU, against the plain modules a
user would otherwise write: at a tiny size (batch 4, 8 features, one thread) the arithmetic is negligible, so
this times the Python and dispatch path that every eager call pays before its kernels run, on a GPU too.

fastgen runs its native CPU kernels here (what `fastgen.train` uses on the CPU). Speed-up above 1.0x: fastgen's
call costs the host less than the plain one.
"""

import pytest
import torch
import torch.nn.functional as F

import fastgen
from fastgen.ops import bce_kl_loss, cpu_backend, native, reparameterize
from fastgen.ops.reference import kl_to_standard_normal

BATCH, FEATURES, LATENT, CALLS = 4, 8, 8, 200


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layer_case():
    torch.manual_seed(0)
    x = torch.randn(BATCH, FEATURES, requires_grad=True)
    plain = torch.nn.Sequential(torch.nn.Linear(FEATURES, FEATURES), torch.nn.LeakyReLU(0.2), torch.nn.Dropout(0.3))
    fused = fastgen.LinearLeakyReLUDropout(FEATURES, FEATURES, negative_slope=0.2, p=0.3, kernels="native")
    return (lambda: plain(x).sum().backward()), (lambda: fused(x).sum().backward())


def _reparameterize_case():
    mu, logvar = torch.randn(BATCH, LATENT, requires_grad=True), torch.randn(BATCH, LATENT, requires_grad=True)
    key = torch.tensor([0, 0])
    return (
        lambda: (mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)).sum().backward(),
        lambda: reparameterize(mu, logvar, seed=key, kernels="native").sum().backward(),
    )


def _bce_kl_case():
    logits = torch.randn(BATCH, FEATURES, requires_grad=True)
    target = torch.rand(BATCH, FEATURES)
    mu, logvar = torch.randn(BATCH, LATENT, requires_grad=True), torch.randn(BATCH, LATENT, requires_grad=True)

    def plain():
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
        (bce + kl_to_standard_normal(mu, logvar)).mean().backward()

    return plain, lambda: bce_kl_loss(logits, target, mu, logvar, kernels="native").backward()


CASES = {"linear_leaky_relu_dropout layer": _layer_case, "reparameterize": _reparameterize_case, "bce_kl_loss": _bce_kl_case}


@pytest.mark.parametrize("variant", ["plain", "fastgen"])
@pytest.mark.parametrize("op", list(CASES))
def test_host_time(benchmark, record, device, op, variant):
    if device.type != "cpu":
        pytest.skip("the host-time benchmark runs on the CPU (its GPU counterpart is bench/test_kernels.py)")
    if variant == "fastgen" and not native.load():
        pytest.skip(f"the native CPU kernels are not available: {native.reason}")
    plain, fused = CASES[op]()
    call = plain if variant == "plain" else fused

    def run():
        for _ in range(CALLS):
            call()

    benchmark.group = f"host time {op} forward+backward"
    with cpu_backend("native"):
        benchmark.pedantic(run, rounds=15, warmup_rounds=2, iterations=1)
    record(variant=variant, role="reference" if variant == "plain" else "variant", op=op, calls=CALLS, threads=1)
    benchmark.extra_info["us_per_call"] = benchmark.stats.stats.median / CALLS * 1e6
