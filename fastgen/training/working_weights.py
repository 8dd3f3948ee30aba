"""Low-precision working copies of a network's weights for mixed-precision training (`--amp`).

The network keeps its float32 parameters as the master weights: Adam and the moving average update them, and
checkpoints and `model.safetensors` hold them. The forward and backward passes use a bf16 (or fp16) copy of
each parameter instead, written once per optimizer step right after Adam, so no weight is cast in the step
itself (under autocast every use of an fp32 weight reads it and writes a low-precision copy: several passes
over ~3M parameters a GAN step). The copies are never saved: `refresh` derives them from the masters, so a
resumed run cannot hold copies that disagree with its weights.
"""

from __future__ import annotations

import torch
from torch import nn


class WorkingWeights:
    """`dtype` copies of `module`'s parameters, as a name -> tensor dict for `torch.func.functional_call`."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        named = list(module.named_parameters())
        self.masters = [p for _, p in named]
        self.copies = [p.detach().to(dtype).requires_grad_() for p in self.masters]  # leaves: gradients are taken for them
        self.by_name = {name: copy for (name, _), copy in zip(named, self.copies)}

    @torch.no_grad()
    def refresh(self) -> None:
        """copies <- masters, in one multi-tensor pass (in place: a captured CUDA graph keeps their addresses)."""
        torch._foreach_copy_(self.copies, self.masters)

    def frozen(self) -> dict[str, torch.Tensor]:
        """The copies detached: gradients flow through the network's activations only."""
        return {name: copy.detach() for name, copy in self.by_name.items()}
