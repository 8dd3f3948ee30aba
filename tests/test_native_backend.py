"""fastgen's ops and training on the native CPU kernels (`--kernels native`): the same numbers as the
reference math, the Triton kernels' masks bit for bit, one compiled graph, and what config.json records."""

import json

import pytest
import torch

import fastgen
from fastgen.ops import bce_kl_loss, cpu_backend, dropout_keep_mask, linear_leaky_relu_dropout, native, reparameterize
from fastgen.ops.dispatch import TRITON_INTERPRET
from fastgen.ops.reference import bce_kl_loss_reference, linear_leaky_relu_dropout_reference
from fastgen.training.run import resolve_kernels
from tests.helpers import assert_close, train_cli

pytestmark = pytest.mark.skipif(not native.load(), reason=f"native kernels unavailable: {native.reason}")


def test_the_fused_ops_on_native_kernels_match_the_reference():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(33, 47, generator=gen), torch.randn(29, 47, generator=gen) / 7, torch.randn(29, generator=gen)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    with cpu_backend("native"):
        y = linear_leaky_relu_dropout(*leaves, negative_slope=0.2, p=0.3, seed=11, kernels="native")
        y.backward(torch.ones_like(y))
        mask = dropout_keep_mask(11, (33, 29), 0.3, "cpu")
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    ref = linear_leaky_relu_dropout_reference(*ref_leaves, 0.2, mask, 0.3)
    ref.backward(torch.ones_like(ref))
    assert_close(y, ref, torch.float32, "y")
    for name, a, e in zip(("x", "weight", "bias"), leaves, ref_leaves):
        assert_close(a.grad, e.grad, torch.float32, f"grad {name}")

    mu, logvar = torch.randn(5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    logits, target = torch.randn(5, 784, generator=gen), torch.rand(5, 784, generator=gen)
    with cpu_backend("native"):
        loss = bce_kl_loss(logits, target, mu, logvar, kernels="native")
        eps = reparameterize(torch.zeros_like(mu), torch.zeros_like(logvar), seed=3, kernels="native")
        z = reparameterize(mu, logvar, seed=3, kernels="native")
    assert_close(loss, bce_kl_loss_reference(logits, target, mu, logvar), torch.float32, "bce_kl_loss")
    assert_close(z, mu + torch.exp(0.5 * logvar) * eps, torch.float32, "z")


@pytest.mark.skipif(not TRITON_INTERPRET, reason="needs the Triton interpreter (TRITON_INTERPRET=1)")
def test_one_seed_gives_the_triton_kernels_mask_bit_for_bit():
    x, w = torch.ones(64, 8), torch.ones(300, 8)  # every pre-activation 8 > 0: y is the mask times 8 / (1 - p)
    key = torch.tensor([2**40 + 7, 2**33 + 5])
    outputs = {}
    for backend in ("native", "triton"):
        with cpu_backend(backend):
            outputs[backend] = linear_leaky_relu_dropout(
                x, w, p=0.3, seed=key, kernels="triton" if backend == "triton" else "native"
            )
    assert torch.equal(outputs["native"] != 0, outputs["triton"] != 0)
    assert 0.65 < (outputs["native"] != 0).float().mean() < 0.75


def test_the_gan_step_compiles_into_one_graph_on_native_kernels():
    from fastgen.config import TrainConfig
    from fastgen.training.trainers import GANTrainer

    torch._dynamo.reset()
    torch.manual_seed(0)
    trainer = GANTrainer(TrainConfig(model="gan", kernels="native").resolved(), torch.device("cpu"))
    with cpu_backend("native"), torch._dynamo.config.patch(trace_autograd_ops=True):
        explanation = torch._dynamo.explain(trainer.step)(torch.rand(32, 784) * 2 - 1)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_training_with_native_kernels_records_them(mnist, tmp_path):
    summary = fastgen.train(
        fastgen.TrainConfig(
            model="vae",
            kernels="native",
            max_steps=10,
            data_dir=str(mnist),
            download=False,
            out=str(tmp_path / "run"),
            quiet=True,
            compile=False,
        )
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["kernels_used"] == "native" and summary["kernels"] == "native"
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["final"].values())


def _train(mnist, out, **overrides):
    settings = dict(model="vae", max_steps=4, data_dir=str(mnist), download=False, out=str(out), quiet=True, compile=False)
    return fastgen.train(fastgen.TrainConfig(**{**settings, **overrides}))


def test_auto_means_native_kernels_for_a_compiled_cpu_step_and_plain_ops_for_an_eager_one():
    cpu = torch.device("cpu")
    assert resolve_kernels("auto", cpu, compiled=True) == "native"
    assert resolve_kernels("auto", cpu, compiled=False) == "eager"
    assert resolve_kernels("native", cpu, compiled=False) == "native" and resolve_kernels("eager", cpu) == "eager"


def test_auto_trains_on_the_native_kernels_on_the_cpu_and_records_it(mnist, tmp_path):
    summary = _train(mnist, tmp_path / "run", device="cpu", compile=None)  # the default: compiled
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["kernels"] == "native" and config["kernels_used"] == "native" and summary["kernels"] == "native"
    assert config["compile"] is True


def test_a_resume_keeps_the_kernels_the_run_trained_with(mnist, tmp_path):
    _train(mnist, tmp_path / "run", kernels="eager")
    summary = fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "run"), max_steps=8, quiet=True))
    assert summary["kernels"] == "eager" and summary["steps"] == 8


@pytest.mark.slow
def test_without_native_kernels_auto_trains_on_plain_ops_after_one_notice(mnist, tmp_path):
    args = (
        "--model",
        "vae",
        "--max-steps",
        "2",
        "--quiet",
        "--data-dir",
        str(mnist),
        "--out",
        str(tmp_path / "r"),
    )
    result = train_cli(*args, env={"FASTGEN_NATIVE": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("native CPU kernels not in use (turned off by FASTGEN_NATIVE=0)") == 1
    assert json.loads((tmp_path / "r" / "config.json").read_text())["kernels_used"] == "eager"
