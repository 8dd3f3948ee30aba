"""What a training step costs at the physical limit: FLOPs, bytes through HBM and kernel launches.

`gan_step` and `vae_step` list the kernels one GANTrainer / VAETrainer step launches in eager PyTorch on
CUDA, read off fastgen's code path; `step_limits` turns such a list into floors on an H100 SXM and an H200
(compute, memory, launches eager and from one CUDA graph); `limits_markdown` writes limits.md from them.
`python -m bench.static_report` writes limits.md / limits.json (`--limits-only`: those alone).
"""

from __future__ import annotations

import dataclasses

# Published peak figures (NVIDIA H100 Tensor Core GPU datasheet, SXM5 column; NVIDIA H200 datasheet, SXM
# column). The datasheets quote tensor-core rates with 2:4 sparsity: the dense rates are half of those.
DEVICES = {
    "H100 SXM": {"fp32": 67e12, "tf32": 989e12 / 2, "bf16": 1979e12 / 2, "hbm": 3.35e12},
    "H200 SXM": {"fp32": 67e12, "tf32": 989e12 / 2, "bf16": 1979e12 / 2, "hbm": 4.8e12},
}
EAGER_LAUNCH_US = (2.0, 4.0)  # host cost of one kernel launched from eager PyTorch (dispatch + cudaLaunchKernel)
GRAPH_NODE_US = 1.0  # one kernel node of a replayed CUDA graph, back to back with the next
ADAM_MIN_BYTES = 28  # one fused pass: read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq (fp32)
ADAM_FOREACH_BYTES = 80  # torch's multi-tensor capturable Adam: lerp_, mul_, addcmul_, sqrt, div_, add_, div_, addcdiv_
ADAM_FOREACH_LAUNCHES = 17  # its _foreach_* calls, one launch each for fastgen's parameter counts


@dataclasses.dataclass
class Launch:
    phase: str
    what: str
    kind: str  # "matmul" | "fused" (a fastgen Triton kernel) | "elementwise" | "adam"
    flops: float = 0.0
    bytes: float = 0.0
    wasted: bool = False  # computed by the eager path, then discarded


class StepInventory:
    """The kernels one training step launches in eager PyTorch on CUDA, read off fastgen's code path, with the
    FLOPs (2 M N K per matmul) and the bytes each moves if every operand comes from HBM once."""

    def __init__(self, amp: bool):
        self.amp = amp
        self.act = 2 if amp else 4  # bytes per activation element (bf16 autocast, else fp32)
        self.launches: list[Launch] = []
        self.phase = ""

    def add(self, what, kind, flops=0.0, nbytes=0.0, wasted=False):
        self.launches.append(Launch(self.phase, what, kind, flops, nbytes, wasted))

    def elementwise(self, what, elements=0, tensors=2, count=1):
        """`count` small kernels; `elements` x `tensors` activation reads and writes for the first."""
        for i in range(count):
            self.add(what, "elementwise", 0.0, elements * tensors * self.act if i == 0 else 0.0)

    def casts(self, layers):
        """bf16 autocast copies each weight and bias once per autocast region (read fp32, write bf16)."""
        if self.amp:
            for k, n in layers:
                self.add(f"cast {k}x{n} weight to bf16", "elementwise", 0, 6 * n * k)
                self.add(f"cast {n} bias to bf16", "elementwise", 0, 6 * n)

    def matmul(self, what, m, n, k, out_bytes=None, wasted=False):
        self.add(what, "matmul", 2 * m * n * k, (m * k + k * n) * self.act + m * n * (out_bytes or self.act), wasted)

    def fused_forward(self, m, k, n, p):
        if p > 0:
            self.elementwise("philox key: clone", count=1)
            self.elementwise("philox key: step += 1", count=1)
        else:
            self.elementwise("philox key: zeros(2)", count=1)
        self.add(f"fused linear {k}->{n}", "fused", 2 * m * n * k, (m * k + k * n + m * n + n) * self.act)

    def linear_forward(self, m, k, n):
        self.matmul(f"addmm {k}->{n}", m, n, k)

    def weight_grads(self, m, k, n, wasted=False):
        grad_bytes = self.act if self.amp else 4
        self.matmul(f"grad weight {k}->{n}", m, n, k, out_bytes=None, wasted=wasted)
        self.launches[-1].bytes += n * k * (grad_bytes - self.act)
        self.add(f"grad bias {n}: sum(0)", "elementwise", 0, (m * n + n) * self.act, wasted)
        if self.amp:  # the autocast copy's backward casts the grads back to fp32
            self.add(f"grad {k}x{n} weight to fp32", "elementwise", 0, 6 * n * k, wasted)
            self.add(f"grad {n} bias to fp32", "elementwise", 0, 6 * n, wasted)

    def fused_backward(self, m, k, n, need_x, need_w, custom_op_waste=False):
        self.add(f"fused grad_pre {k}->{n}", "fused", 0, 3 * m * n * self.act)
        if need_x:
            self.matmul(f"grad input {k}->{n}", m, k, n)
        # The fused op's backward reads ctx.needs_input_grad, fixed at forward time: through a frozen
        # layer (D in the G update) eager PyTorch still computes its weight and bias gradients.
        if need_w or custom_op_waste:
            self.weight_grads(m, k, n, wasted=not need_w)

    def linear_backward(self, m, k, n, need_x, need_w):
        if need_x:
            self.matmul(f"grad input {k}->{n}", m, k, n)
        if need_w:
            self.weight_grads(m, k, n)

    def adam(self, layers):
        params = sum(n * k + n for k, n in layers)
        self.add(f"Adam over {params:,} parameters", "adam", 0, ADAM_MIN_BYTES * params)
        for _ in range(ADAM_FOREACH_LAUNCHES - 1):
            self.add("Adam (further foreach launch)", "adam")
        return params


GAN_G = [(100, 256), (256, 512), (512, 1024), (1024, 784)]
GAN_D = [(784, 1024), (1024, 512), (512, 256), (256, 1)]
VAE_ENCODER = [(784, 512), (512, 256), (256, 32)]
VAE_DECODER = [(16, 256), (256, 512), (512, 784)]


def gan_step(batch: int, amp: bool = False) -> StepInventory:
    """GANTrainer.step: D update on real + fake (2B rows), then a G update through D; Adam on each."""
    s, B = StepInventory(amp), batch
    s.phase = "D update: forward"
    s.elementwise("randn z", B * 100, 1)
    s.casts(GAN_G)
    if amp:
        s.elementwise("z to bf16 (fused op's input cast)", B * 100)
    for k, n in GAN_G[:3]:
        s.fused_forward(B, k, n, p=0.0)
    s.linear_forward(B, *GAN_G[3])
    s.elementwise("tanh", B * 784)
    if amp:
        s.elementwise("fake to fp32", B * 784)
    s.elementwise("cat real, fake", 2 * B * 784)
    s.casts(GAN_D)
    if amp:
        s.elementwise("real + fake to bf16 (fused op's input cast)", 2 * B * 784)
    for k, n in GAN_D[:3]:
        s.fused_forward(2 * B, k, n, p=0.3)
    s.linear_forward(2 * B, *GAN_D[3])
    s.elementwise("loss: neg, softplus x2, mean x2, add (+ float under autocast)", count=6 + amp)
    s.phase = "D update: backward"
    s.elementwise("loss backward: mean x2, softplus x2, neg, two slices' zeros + copy, add", count=10 + amp)
    s.linear_backward(2 * B, *GAN_D[3], need_x=True, need_w=True)
    for i, (k, n) in reversed(list(enumerate(GAN_D[:3]))):
        s.fused_backward(2 * B, k, n, need_x=i > 0, need_w=True)
    s.phase = "D update: Adam"
    s.adam(GAN_D)
    s.phase = "G update: forward"
    s.casts(GAN_D)  # D changed: autocast copies it again
    for k, n in GAN_D[:3]:
        s.fused_forward(B, k, n, p=0.3)
    s.linear_forward(B, *GAN_D[3])
    s.elementwise("loss: neg, softplus, mean (+ float under autocast)", count=3 + amp)
    s.phase = "G update: backward"
    s.elementwise("loss backward: mean, softplus, neg", count=3 + amp)
    s.linear_backward(B, *GAN_D[3], need_x=True, need_w=False)
    for k, n in reversed(GAN_D[:3]):
        s.fused_backward(B, k, n, need_x=True, need_w=False)  # D's weights detached: no weight gradients
    s.elementwise("tanh backward", B * 784, 3)
    s.linear_backward(B, *GAN_G[3], need_x=True, need_w=True)
    for i, (k, n) in reversed(list(enumerate(GAN_G[:3]))):
        s.fused_backward(B, k, n, need_x=i > 0, need_w=True)
    s.phase = "G update: Adam"
    s.adam(GAN_G)
    s.phase = "metrics"
    s.elementwise("sigmoid x2, mean x2, stack", count=5)
    return s


def vae_step(batch: int, amp: bool = False) -> StepInventory:
    """VAETrainer.step: encoder, reparameterize, decoder, bce_kl_loss (+ the KL reported apart), Adam."""
    s, B = StepInventory(amp), batch
    s.phase = "forward"
    s.casts(VAE_ENCODER + VAE_DECODER)
    if amp:
        s.elementwise("x to bf16 (fused op's input cast)", B * 784)
    for k, n in VAE_ENCODER[:2]:
        s.fused_forward(B, k, n, p=0.0)
    s.linear_forward(B, *VAE_ENCODER[2])
    s.elementwise("philox key: clone, step += 1", count=2)
    s.elementwise("mu, logvar: contiguous copies of the chunk views (+ float under autocast)", B * 16, 4, count=2 + 2 * amp)
    s.add("fused reparameterize", "fused", 0, 4 * B * 16 * 4)
    if amp:
        s.elementwise("z to bf16 (fused op's input cast)", B * 16)
    for k, n in VAE_DECODER[:2]:
        s.fused_forward(B, k, n, p=0.0)
    s.linear_forward(B, *VAE_DECODER[2])
    if amp:
        s.elementwise("logits, mu, logvar to fp32", B * 784, 2, count=3)
    s.elementwise("mu, logvar: contiguous copies again", B * 16, 4, count=2)
    loss_width = 4  # bce_kl_loss computes in fp32, also under autocast
    s.add("fused bce_kl_loss", "fused", 0, (2 * B * 784 + 2 * B * 16) * loss_width)
    s.elementwise("KL reported apart: 1 + lv, mu^2, sub, exp, sub, sum, scale (+ casts under autocast)", count=7 + 3 * amp)
    s.elementwise("means of loss, bce, kl; bce = loss - kl", count=4)
    s.phase = "backward"
    s.elementwise("mean backward, grad_loss contiguous", count=2)
    s.add("fused bce_kl_loss backward", "fused", 0, (3 * B * 784 + 4 * B * 16) * loss_width)
    s.linear_backward(B, *VAE_DECODER[2], need_x=True, need_w=True)
    for k, n in reversed(VAE_DECODER[:2]):
        s.fused_backward(B, k, n, need_x=True, need_w=True)
    s.add("fused reparameterize backward", "fused", 0, 4 * B * 16 * 4)
    s.elementwise("mu, logvar grads: add the KL's, cat", B * 32, 3, count=3)
    s.linear_backward(B, *VAE_ENCODER[2], need_x=True, need_w=True)
    for i, (k, n) in reversed(list(enumerate(VAE_ENCODER[:2]))):
        s.fused_backward(B, k, n, need_x=i > 0, need_w=True)
    s.phase = "Adam"
    s.adam(VAE_ENCODER + VAE_DECODER)
    s.phase = "metrics"
    s.elementwise("stack", count=1)
    return s


def compiled_launches(s: StepInventory) -> int:
    """Launches of the compiled step (torch.compile + one CUDA graph), estimated: matmuls and fastgen's Triton
    kernels stay as they are, each run of elementwise kernels between them fuses into one, Adam becomes one
    kernel per optimizer, and what eager computes only to discard it is eliminated."""
    count, in_run = 0, False
    for launch in s.launches:
        if launch.wasted:
            continue
        if launch.kind == "elementwise":
            count += not in_run
            in_run = True
        elif launch.kind == "adam":
            count += launch.bytes > 0  # the first launch of each optimizer carries its bytes
            in_run = False
        else:
            count += 1
            in_run = False
    return count


def step_limits(name: str, s: StepInventory) -> dict:
    needed = [x for x in s.launches if not x.wasted]
    flops = sum(x.flops for x in needed)
    nbytes = sum(x.bytes for x in needed)
    adam_bytes = sum(x.bytes for x in needed if x.kind == "adam")
    params = adam_bytes / ADAM_MIN_BYTES
    foreach_extra = (ADAM_FOREACH_BYTES - ADAM_MIN_BYTES) * params
    eager, compiled = len(s.launches), compiled_launches(s)
    matmuls = sum(x.kind in ("matmul", "fused") and x.flops > 0 for x in needed)
    out = {
        "step": name,
        "amp": "bf16" if s.amp else "fp32",
        "flops": flops,
        "bytes": nbytes,
        "adam_bytes": adam_bytes,
        "bytes_eager_adam": nbytes + foreach_extra,
        "parameters": params,
        "matmuls": matmuls,
        "wasted_flops_eager": sum(x.flops for x in s.launches if x.wasted),
        "launches_eager": eager,
        "launches_compiled": compiled,
        "launches_eager_by_kind": {k: sum(x.kind == k for x in s.launches) for k in ("matmul", "fused", "elementwise", "adam")},
        "launch_floor_eager_us": [eager * t for t in EAGER_LAUNCH_US],
        "launch_floor_graph_us": compiled * GRAPH_NODE_US,
        "devices": {},
    }
    rates = ("bf16",) if s.amp else ("fp32", "tf32")
    for device, peak in DEVICES.items():
        out["devices"][device] = {
            **{f"compute_us_{r}": flops / peak[r] * 1e6 for r in rates},
            "memory_us": nbytes / peak["hbm"] * 1e6,
        }
    return out


def limits() -> list[dict]:
    rows = []
    for amp in (False, True):
        for batch in (32, 64):
            rows.append(step_limits(f"GAN B={batch}", gan_step(batch, amp)))
        rows.append(step_limits("VAE B=100", vae_step(100, amp)))
    return rows


def _us(value: float) -> str:
    return f"{value:.1f}"


def limits_markdown(rows: list[dict]) -> str:
    devices = list(DEVICES)
    lines = [
        "# What a step costs at the physical limit",
        "",
        "Generated by `python -m bench.static_report` (`bench/step_limits.py`: `gan_step`, `vae_step`, `step_limits`) "
        "from fastgen's code path, so a first GPU measurement can be read against its floor at once. Per step: "
        "FLOPs, bytes through HBM, kernel launches; each turned into a time floor on an H100 SXM and an H200.",
        "",
        "| step | precision | GFLOP | MB moved | launches eager / graph | "
        + " | ".join(f"{d}: compute us | {d}: memory us" for d in devices)
        + " | launch floor eager us | launch floor graph us |",
        "|---|---|---|---|---|" + "---|---|" * len(devices) + "---|---|",
    ]
    for r in rows:
        cells = []
        for d in devices:
            dev = r["devices"][d]
            compute = " / ".join(f"{_us(dev[k])} {k.rsplit('_', 1)[1].upper()}" for k in dev if k.startswith("compute_us_"))
            cells.append(f"{compute} | {_us(dev['memory_us'])}")
        lo, hi = r["launch_floor_eager_us"]
        lines.append(
            f"| {r['step']} | {r['amp']} | {r['flops'] / 1e9:.2f} | {r['bytes'] / 1e6:.1f} | "
            f"{r['launches_eager']} / {r['launches_compiled']} | "
            + " | ".join(cells)
            + f" | {lo:.0f}-{hi:.0f} | {r['launch_floor_graph_us']:.0f} |"
        )
    lines += [
        "",
        "Eager launches by kind (matmul: cuBLAS; fused: fastgen's Triton kernels; elementwise: losses, casts, "
        "Philox-key bookkeeping, bias-gradient sums; Adam: the multi-tensor update's launches):",
        "",
        "| step | precision | matmul | fused | elementwise | Adam |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        kinds = r["launches_eager_by_kind"]
        lines.append(
            f"| {r['step']} | {r['amp']} | {kinds['matmul']} | {kinds['fused']} | {kinds['elementwise']} | {kinds['adam']} |"
        )
    gan32 = next(r for r in rows if r["step"] == "GAN B=32" and r["amp"] == "fp32")
    h100 = gan32["devices"]["H100 SXM"]
    lines += [
        "",
        "**Reading it.** At these batch sizes no step is compute-bound: the GAN step at B=32 in fp32 needs "
        f"{_us(h100['compute_us_fp32'])} us of FP32 math on an H100 (TF32 {_us(h100['compute_us_tf32'])} us) and "
        f"{_us(h100['memory_us'])} us of HBM traffic ({gan32['adam_bytes'] / gan32['bytes']:.0%} of it Adam's), but launches "
        f"{gan32['launches_eager']} kernels: {gan32['launch_floor_eager_us'][0]:.0f}-{gan32['launch_floor_eager_us'][1]:.0f} us "
        f"eagerly, about {gan32['launch_floor_graph_us']:.0f} us replayed from one CUDA graph. A measured step near "
        "the graph launch floor is as fast as this kernel count allows; only fewer kernels (fusion) go lower. "
        "bf16 autocast cuts math time but not bytes: the weight copies it makes each step outweigh the halved activations.",
        "",
        "## What is counted",
        "",
        "- **FLOPs**: 2 M N K for every matmul of the forward and the backward (fused linear kernels, addmm, the two "
        "backward matmuls of each layer: input gradient where one is needed, weight gradient where the weight is "
        "being trained). GAN: generator forward on B rows, discriminator forward and backward on the 2B rows of "
        "real + fake, Adam on D, discriminator forward on the B fakes and backward to its input (no D weight "
        "gradients), generator backward, Adam on G. VAE: encoder, decoder, backward of both (no input gradient "
        "for the images), Adam. Left out: elementwise math (activations, Philox, losses, Adam: a few FLOPs per "
        "element, under 1% of the matmuls).",
        "- **No eager waste**: in the G update the discriminator runs with detached weights, so fastgen's fused "
        "op's backward (which reads `ctx.needs_input_grad` as it was at forward time) computes no D weight or "
        "bias gradients (pinned on the CPU by tests/test_trainers.py).",
        "- **Bytes**: each kernel reads its operands from HBM and writes its result once (no reuse between kernels "
        "through L2): matmul inputs, weights and outputs at the activation width (4 B fp32, 2 B bf16), the fused "
        "kernels' reads and writes, elementwise passes over activations, bf16 autocast's weight copies (read fp32, "
        "write bf16, once per autocast region: the GAN copies D twice a step) and the fp32 casts of the weight "
        f"gradients, and Adam at {ADAM_MIN_BYTES} B per parameter (read parameter, gradient and both moments, write "
        "parameter and both moments, all fp32: one fused pass, which Inductor's compiled update approaches). "
        f"torch's eager multi-tensor Adam makes several passes, about {ADAM_FOREACH_BYTES} B per parameter "
        f"(GAN B=32 fp32: {gan32['bytes_eager_adam'] / 1e6:.0f} MB a step instead of {gan32['bytes'] / 1e6:.0f} MB). "
        f"The whole state (GAN: {gan32['parameters'] / 1e6:.2f} M parameters, {gan32['parameters'] * 16 / 1e6:.0f} MB "
        "with gradients and both moments in fp32) nearly fits the 50 MB L2 of both GPUs, so L2 may serve much of "
        "this traffic: the HBM time is the floor for a step that streams its state, not for one that keeps it in L2.",
        "- **Peaks** (published, NVIDIA H100 Tensor Core GPU datasheet SXM5 column and H200 datasheet SXM column; the "
        "tensor-core figures there are with 2:4 sparsity, halved here for dense math): "
        + "; ".join(
            f"{d}: FP32 {p['fp32'] / 1e12:.0f} TFLOP/s, TF32 {p['tf32'] / 1e12:.1f}, BF16 {p['bf16'] / 1e12:.1f}, "
            f"HBM {p['hbm'] / 1e12:.2f} TB/s"
            for d, p in DEVICES.items()
        )
        + ". fastgen's fp32 matmuls run in "
        "IEEE fp32 unless `torch.backends.cuda.matmul.allow_tf32` is set, so FP32 is the fp32 step's compute peak; "
        "TF32 is shown for that switch. Real matmuls of these sizes (K and N of 100-1024, M of 32-200) reach a "
        "fraction of peak, so the compute floor is loose.",
        f"- **Launches**: the kernels of the eager step, listed one by one from the code path in `gan_step` / "
        "`vae_step` (each fused Triton op, each matmul, each elementwise op of the losses, casts and Philox-key "
        f"bookkeeping, {ADAM_FOREACH_LAUNCHES} launches per multi-tensor Adam update: its `_foreach_*` calls), "
        f"times {EAGER_LAUNCH_US[0]:.0f}-{EAGER_LAUNCH_US[1]:.0f} us each (host-bound launch from eager PyTorch, "
        "without CUDA graphs). The compiled step (`torch.compile` + one CUDA graph, fastgen's default on CUDA) is "
        "estimated as: matmuls and fastgen's Triton kernels stay one kernel each, each run of elementwise ops "
        "between them fuses into one, each Adam update becomes one kernel; "
        f"times {GRAPH_NODE_US:.0f} us per graph node. Both counts are estimates (cuBLAS may add split-K reduction "
        "kernels; Inductor may split or merge differently); a profiler trace on the GPU settles them.",
        "- Not counted: the host-to-device copy of the batch, data loading, metric reads (`.item()`), evaluation.",
    ]
    return "\n".join(lines) + "\n"
