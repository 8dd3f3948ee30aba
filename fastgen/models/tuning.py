"""Kernel choices measured before a step is compiled: each fused linear layer's implementation at the shapes the
step will call it with (fastgen/ops/linear_tuning.py), so that tracing finds them made."""

from __future__ import annotations

import torch

from fastgen.models.layers import LinearLeakyReLUDropout
from fastgen.models.stacked import StackedLinearLeakyReLUDropout
from fastgen.ops.linear_leaky_relu_dropout import tune


def tune_fused_linears(module: torch.nn.Module, rows: tuple[int, ...], dtype: torch.dtype) -> dict[str, str]:
    """Measure (once per case, on a GPU; nothing elsewhere) each fused linear layer of `module` for inputs of each
    of `rows` rows (per replica in a stacked network) in `dtype`, with dropout as in training. Returns the
    choices by case."""
    choices = {}
    for layer in module.modules():
        if isinstance(layer, (LinearLeakyReLUDropout, StackedLinearLeakyReLUDropout)) and layer.kernels != "eager":
            weight, bias = layer.weight.to(dtype), layer.bias.to(dtype) if layer.bias is not None else None
            for n in rows:
                choices.update(tune(weight, bias, n, layer.p))
    return choices
