"""The paper's architectures: sizes, shapes, ranges, the drop-in layer, eager vs fused agreement."""

import pytest
import torch
from torch import nn

from fastgen import VAE, Discriminator, Generator, LinearLeakyReLUDropout
from fastgen.ops.reference import bce_kl_loss_reference


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_paper():
    assert n_params(Generator()) == 1_486_352
    assert n_params(Discriminator()) == 1_460_225
    assert n_params(VAE()) == 1_079_600


def test_generator_output_shape_and_range():
    g = Generator()
    x = g(torch.randn(5, 100) * 10)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    s = g.sample(7, seed=3)
    assert s.shape == (7, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(s, g.sample(7, seed=3)) and not torch.equal(s, g.sample(7, seed=4))


def test_discriminator_returns_one_logit_per_image():
    assert Discriminator()(torch.randn(6, 1, 28, 28)).shape == (6,)


def test_vae_shapes_and_sample_range():
    vae = VAE()
    logits, mu, logvar = vae(torch.rand(4, 1, 28, 28))
    assert logits.shape == (4, 784) and mu.shape == (4, 16) and logvar.shape == (4, 16)
    s = vae.sample(9, seed=0)
    assert s.shape == (9, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    assert vae.reconstruct(torch.rand(3, 1, 28, 28)).shape == (3, 1, 28, 28)


def test_vae_loss_equals_an_independent_functional_computation():
    torch.manual_seed(0)
    vae = VAE()
    x = torch.rand(10, 1, 28, 28)
    key = torch.tensor([42, 0])
    loss, bce, kl = vae.loss(x, seed=key)
    logits, mu, logvar = vae(x, seed=key)
    flat = x.view(10, -1)
    bce_ref = nn.functional.binary_cross_entropy(torch.sigmoid(logits.double()), flat.double(), reduction="sum") / 10
    kl_ref = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
    assert abs(loss.item() - (bce_ref.item() + kl_ref.item())) < 1e-3
    assert abs(bce.item() - bce_ref.item()) < 1e-3 and abs(kl.item() - kl_ref.item()) < 1e-4


def test_layer_is_a_drop_in_for_linear_leaky_relu_dropout():
    torch.manual_seed(1)
    layer = LinearLeakyReLUDropout(20, 30, negative_slope=0.1, p=0.5)
    torch.manual_seed(1)
    linear = nn.Linear(20, 30)
    assert torch.equal(layer.weight, linear.weight) and torch.equal(layer.bias, linear.bias)
    reference = nn.Sequential(linear, nn.LeakyReLU(0.1), nn.Dropout(0.5)).eval()
    x = torch.randn(8, 20)
    assert torch.allclose(layer.eval()(x), reference(x), atol=1e-6)
    layer.train()
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b), "each training call must draw a new mask"
    assert int(layer.philox_key[1]) == 2, "the step counter advances once per training call"
    kept = (a != 0).float().mean().item()
    assert 0.3 < kept < 0.7


@pytest.mark.parametrize("bad", [dict(p=1.0), dict(p=-0.2), dict(negative_slope=-0.5), dict(kernels="cuda")])
def test_layer_rejects_bad_settings(bad):
    with pytest.raises((ValueError, TypeError)):
        LinearLeakyReLUDropout(4, 4, **bad)


def test_eager_and_fused_paths_agree_including_dropout(backend):
    """kernels="eager" (plain ops) and the fused ops draw the same masks: same outputs, same gradients."""
    torch.manual_seed(0)
    fused = Discriminator(kernels="triton" if backend == "triton" else "auto")
    eager = Discriminator(kernels="eager")
    eager.load_state_dict(fused.state_dict())
    x = torch.randn(16, 1, 28, 28)
    out_f, out_e = fused(x), eager(x)
    assert torch.allclose(out_f, out_e, atol=1e-4)
    out_f.sum().backward()
    out_e.sum().backward()
    for pf, pe in zip(fused.parameters(), eager.parameters()):
        assert torch.allclose(pf.grad, pe.grad, atol=1e-4)


def test_vae_fused_loss_equals_reference_loss(backend):
    torch.manual_seed(0)
    vae = VAE(kernels="triton" if backend == "triton" else "auto")
    x = torch.rand(6, 784)
    logits, mu, logvar = vae(x, seed=torch.tensor([1, 2]))
    loss = vae.loss(x, seed=torch.tensor([1, 2]))[0]
    assert abs(loss.item() - bce_kl_loss_reference(logits, x, mu, logvar).item()) < 1e-3
