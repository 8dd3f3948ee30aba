"""Adam as one function call on given gradients, and fp16 loss scaling kept on the device: both
traceable by torch.compile(fullgraph=True) and capturable in a CUDA graph, neither touching `.grad`
(so no zero_grad) nor syncing with the host."""

from __future__ import annotations

import torch
from torch.optim.adam import adam

from fastgen.training.ema import EMA


class StepAdam:
    """Adam (fastgen's native update on the CPU, else torch's fused kernel or its functional multi-tensor
    form) with the state and the learning rate in device tensors.

    `torch.optim.Adam.step` breaks torch.compile graphs on purpose; the fused kernel (through
    `fastgen::fused_adam_`) and the functional `adam` do not. The state is Adam's: per parameter a
    step counter, exp_avg and exp_avg_sq, saved by the checkpoint.

    Mixed precision (`working_dtype` bf16 or fp16): the parameters stay float32 masters (what Adam, the EMA,
    checkpoints and weights files hold) and each gets a working copy in `working_dtype` that the step's
    forward and backward use instead, so no weight is cast inside the step. Each update rewrites the copies
    from the updated masters; they are never saved, only derived (`refresh_working`).

    On the CPU with `native` (float32, or bf16 copies), fastgen's native kernel does the update in one pass:
    it reads the gradients as they are (bf16 under --amp), writes the copies where there are any, and moves
    the moving average (`average`). It gives torch's fused kernel's bits (its AVX2 and AVX-512 kernels) in every
    element, on any thread count.
    """

    def __init__(
        self, params, lr: float, betas, device: torch.device, fused: bool | None = None, working_dtype=None, native: bool = False
    ):
        self.params = list(params)
        self.lr = torch.tensor(float(lr), device=device)  # a tensor: changing it never recompiles
        self.betas = tuple(betas)
        # CPU (where the native update does not run): torch's fused kernel, one pass over all parameters. CUDA: the
        # multi-tensor update with step counters on the device, or the fused kernel where fp16 loss scaling needs `found_inf`.
        self.fused = device.type == "cpu" if fused is None else fused
        self.capturable = device.type == "cuda"
        self.steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in self.params]
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.working = [p.detach().to(working_dtype).requires_grad_() for p in self.params] if working_dtype else []
        self.native = native and working_dtype in (None, torch.bfloat16) and _native_adam_runs(self.params)
        self.average: EMA | None = None

    @property
    def inputs(self) -> list[torch.Tensor]:
        """What a step differentiates its loss by: the working copies under mixed precision, else the parameters."""
        return self.working or self.params

    def keep_average(self, ema: EMA) -> None:
        """Update `ema`, a moving average of exactly these parameters, after each step."""
        if [id(p) for p in ema.params] != [id(p) for p in self.params]:
            raise ValueError("the moving average must cover exactly the optimizer's parameters, in order")
        self.average = ema

    @torch.no_grad()
    def refresh_working(self) -> None:
        """The working copies rewritten from the masters (after a checkpoint is restored into them)."""
        if self.working:
            torch._foreach_copy_(self.working, self.params)

    @torch.no_grad()
    def step(self, grads, found_inf: torch.Tensor | None = None) -> None:
        """One Adam update; skipped (on the device) where `found_inf` is set. `grads` are the inputs' gradients
        (a working copy's in its dtype: the native kernel reads them as they are, the others in float32)."""
        beta1, beta2 = self.betas
        grads = list(grads)
        if self.native and found_inf is None:
            average = self.average
            torch.ops.fastgen_native.adam_(
                self.params, grads, self.exp_avgs, self.exp_avg_sqs, self.steps, self.lr, beta1, beta2, 1e-8, self.working,
                average.shadows if average else [], average.next_weight() if average else None,
            )  # fmt: skip
            return
        if self.fused:
            state = (self.exp_avgs, self.exp_avg_sqs, self.steps)
            fused_adam_(self.params, grads, *state, self.lr, beta1, beta2, found_inf, self.working)
        else:
            self._multi_tensor_step(grads, found_inf)
        if self.average is not None:
            self.average.update()

    def _multi_tensor_step(self, grads, found_inf) -> None:
        beta1, beta2 = self.betas
        # In a traced graph the step counters may live on any device. Outside one (the CPU only), torch's
        # multi-tensor update takes the learning rate as a number.
        capturable = self.capturable or torch.compiler.is_compiling()
        adam(
            self.params,
            [g.to(p.dtype) for p, g in zip(self.params, grads)],
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
        self.refresh_working()  # inside a compiled step the copy fuses with the update's last pass


def _native_adam_runs(params) -> bool:
    """Whether fastgen's native Adam kernel takes these parameters: float32, contiguous, on a CPU that has the
    native kernels."""
    from fastgen.ops import native

    cpu_float32 = all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous() for p in params)
    return cpu_float32 and native.available()


# The fused kernel as an op of ours: torch.optim hides its wrapper from torch.compile, and the kernel's
# tensor-lr overload has no fake implementation, so a compiled step would otherwise trace the
# multi-tensor update, which Inductor makes slower than the one-pass kernel on the CPU (measured).
@torch.library.custom_op("fastgen::fused_adam_", mutates_args=("params", "exp_avgs", "exp_avg_sqs", "steps", "copies"))
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
    copies: list[torch.Tensor],
) -> None:
    """torch's fused Adam on `params` from `grads`; then each of `copies` (if any) rewritten from its parameter."""
    torch._foreach_add_(steps, 1)
    # The fused kernel reads a gradient as if laid out like its parameter, in its dtype: a transposed one (a batched
    # matmul's weight gradient, in a group of seeds) would update the wrong elements (measured), so match the
    # layouts and dtypes first.
    grads = [g if (g.stride(), g.dtype) == (p.stride(), p.dtype) else torch.empty_like(p).copy_(g) for p, g in zip(params, grads)]
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
    if copies:  # a skipped update left the masters, so their copies, as they were
        torch._foreach_copy_(copies, params)


@fused_adam_.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, found_inf, copies) -> None:
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
        # In float32 before unscaling: an fp16 working copy's gradient unscaled in fp16 would lose its small values.
        grads = [g.float() for g in torch.autograd.grad(loss * self.scale, params)]
        if reduce_grads is not None:
            grads = list(reduce_grads(grads))
        found_inf = torch.zeros((), dtype=torch.float32, device=self.scale.device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self.scale.reciprocal())
        torch._amp_update_scale_(self.scale, self.growth_tracker, found_inf, 2.0, 0.5, self.growth_interval)
        return grads, found_inf
