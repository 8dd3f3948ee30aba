"""Shared test helpers: a closeness check that says where and how it failed."""
import torch

# (rtol, atol relative to the reference's largest magnitude) per input dtype.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """|a - e| <= tol * (|e| + max|e|), NaN/inf must match; reports the first bad index."""
    tol = TOLERANCES[dtype]
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    finite_a, finite_e = torch.isfinite(a), torch.isfinite(e)
    if not torch.equal(finite_a, finite_e):
        bad = (finite_a != finite_e).nonzero()[0].tolist()
        raise AssertionError(f"{what}: NaN/inf mismatch first at {bad}: {a[tuple(bad)].item()} vs {e[tuple(bad)].item()}")
    if a.numel() == 0:
        return
    scale = e[finite_e].abs().max().item() if finite_e.any() else 0.0
    bound = tol * (e.abs() + max(scale, 1e-6))
    bad_mask = finite_e & ((a - e).abs() > bound)
    if bad_mask.any():
        idx = tuple(bad_mask.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(bad_mask.sum())} of {a.numel()} elements off (tol {tol}); "
                             f"first at {list(idx)}: {a[idx].item()} vs {e[idx].item()}")
