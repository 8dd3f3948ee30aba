"""Adam as one function call on given gradients, and fp16 loss scaling kept on the device: both
traceable by torch.compile(fullgraph=True) and capturable in a CUDA graph, neither touching `.grad`
(so no zero_grad) nor syncing with the host."""

from __future__ import annotations

import torch
from torch.optim.adam import adam


class StepAdam:
    """torch's Adam update (its fused kernel, or its functional multi-tensor form) with the state and
    the learning rate in device tensors.

    `torch.optim.Adam.step` breaks torch.compile graphs on purpose; the fused kernel (through
    `fastgen::fused_adam_`) and the functional `adam` do not. The state is Adam's: per parameter a
    step counter, exp_avg and exp_avg_sq, saved by the checkpoint.
    """

    def __init__(self, params, lr: float, betas, device: torch.device, fused: bool | None = None):
        self.params = list(params)
        self.lr = torch.tensor(float(lr), device=device)  # a tensor: changing it never recompiles
        self.betas = tuple(betas)
        # CPU: the fused kernel (one pass over all parameters). CUDA: the multi-tensor update with
        # step counters on the device, or the fused kernel where fp16 loss scaling needs `found_inf`.
        self.fused = device.type == "cpu" if fused is None else fused
        self.capturable = device.type == "cuda"
        self.steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in self.params]
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    @torch.no_grad()
    def step(self, grads, found_inf: torch.Tensor | None = None) -> None:
        """One Adam update; skipped (on the device) where `found_inf` is set."""
        beta1, beta2 = self.betas
        grads = list(grads)
        if self.fused:
            fused_adam_(self.params, grads, self.exp_avgs, self.exp_avg_sqs, self.steps, self.lr, beta1, beta2, found_inf)
            return
        # In a traced graph the step counters may live on any device. Outside one (the CPU only), torch's
        # multi-tensor update takes the learning rate as a number.
        capturable = self.capturable or torch.compiler.is_compiling()
        adam(
            self.params,
            grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            [],
            self.steps,
            foreach=True,
            fused=False,
            capturable=capturable,
            differentiable=False,
            grad_scale=None,
            found_inf=found_inf,
            has_complex=False,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=self.lr if capturable else float(self.lr),
            weight_decay=0.0,
            eps=1e-8,
            maximize=False,
        )


# The fused kernel as an op of ours: torch.optim hides its wrapper from torch.compile, and the kernel's
# tensor-lr overload has no fake implementation, so a compiled step would otherwise trace the
# multi-tensor update, which Inductor makes slower than the one-pass kernel on the CPU (measured).
@torch.library.custom_op("fastgen::fused_adam_", mutates_args=("params", "exp_avgs", "exp_avg_sqs", "steps"))
def fused_adam_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
    found_inf: torch.Tensor | None,
) -> None:
    torch._foreach_add_(steps, 1)
    # The fused kernel reads a gradient as if laid out like its parameter: a transposed one (a batched matmul's
    # weight gradient, in a group of seeds) would update the wrong elements (measured), so match the layouts first.
    grads = [g if g.stride() == p.stride() else torch.empty_like(p).copy_(g) for p, g in zip(params, grads)]
    torch._fused_adam_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=0.0,
        eps=1e-8,
        amsgrad=False,
        maximize=False,
        grad_scale=None,
        found_inf=found_inf,
    )
    if found_inf is not None:  # a skipped update does not count as a step
        torch._foreach_sub_(steps, [found_inf] * len(steps))


@fused_adam_.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, found_inf) -> None:
    return None


class DeviceLossScaler:
    """Dynamic fp16 loss scaling with GradScaler's own kernels, all on the device (no `.item()`).

    torch.amp.GradScaler decides whether to skip a step on the host, which would put a sync inside
    every step and rule out CUDA graphs; these are the same operations with the decision left on the device.
    """

    def __init__(self, device: torch.device, init_scale: float = 2.0**16, growth_interval: int = 2000):
        self.scale = torch.full((), init_scale, dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros((), dtype=torch.int32, device=device)
        self.growth_interval = growth_interval

    def grads(self, loss: torch.Tensor, params, reduce_grads=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Unscaled gradients of `loss` and a `found_inf` flag; updates the scale for the next step.

        Under torchrun the scaled gradients are averaged first, so every rank sees the same inf/NaN
        and keeps the same scale."""
        grads = list(torch.autograd.grad(loss * self.scale, params))
        if reduce_grads is not None:
            grads = list(reduce_grads(grads))
        found_inf = torch.zeros((), dtype=torch.float32, device=self.scale.device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self.scale.reciprocal())
        torch._amp_update_scale_(self.scale, self.growth_tracker, found_inf, 2.0, 0.5, self.growth_interval)
        return grads, found_inf
