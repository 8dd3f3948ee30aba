"""The fused ops under torch.compile(fullgraph=True) on the CPU: no graph break, same numbers as eager."""

import torch

from fastgen.ops import bce_kl_loss, linear_leaky_relu_dropout, reparameterize


def _vae_like(x, w1, w2, key):
    h = linear_leaky_relu_dropout(x, w1, None, negative_slope=0.2, p=0.25, seed=key)
    mu, logvar = linear_leaky_relu_dropout(h, w2, None, negative_slope=1.0).chunk(2, dim=1)
    z = reparameterize(mu, logvar, seed=key)
    return bce_kl_loss(z, torch.sigmoid(x[:, : z.shape[1]]), mu, logvar)


def test_three_ops_compile_with_fullgraph_and_match_eager():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, generator=gen)
    w1 = torch.randn(24, 32, generator=gen, requires_grad=True)
    w2 = torch.randn(8, 24, generator=gen, requires_grad=True)
    key = torch.tensor([5, 3])

    explanation = torch._dynamo.explain(_vae_like)(x, w1, w2, key)
    assert explanation.graph_break_count == 0, explanation.break_reasons

    eager = _vae_like(x, w1, w2, key)
    (g_eager,) = torch.autograd.grad(eager, [w1])
    compiled = torch.compile(_vae_like, fullgraph=True)(x, w1, w2, key)
    (g_compiled,) = torch.autograd.grad(compiled, [w1])
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-4)
    assert torch.allclose(g_compiled, g_eager, rtol=1e-4, atol=1e-4)
