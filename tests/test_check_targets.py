"""bench/check_targets.py: each target reads its own benchmark, says pass or FAIL, and "not measured" without it."""

import json

from bench import check_targets


def _bench(folder, rows):
    benchmarks = [
        {"group": group, "name": variant, "stats": {"median": median}, "extra_info": {"variant": variant, "role": role}}
        for group, variant, role, median in rows
    ]
    (folder / "bench-steps.json").write_text(json.dumps({"benchmarks": benchmarks}))


def test_targets_pass_fail_or_are_not_measured(tmp_path):
    _bench(
        tmp_path,
        [
            ("host time reparameterize forward+backward", "plain", "reference", 2.0),
            ("host time reparameterize forward+backward", "fastgen", "variant", 1.0),  # 2x: pass
            ("host time bce_kl_loss forward+backward", "plain", "reference", 1.0),
            ("host time bce_kl_loss forward+backward", "fastgen", "variant", 1.25),  # 0.8x: FAIL
        ],
    )
    cells = [
        {"op": "reparameterize", "batch": 64, "dtype": "fp32", "speedup": 1.5, "ratios": [1.4, 1.5, 1.6]},
        {"op": "reparameterize", "batch": 512, "dtype": "bf16", "speedup": 0.5, "ratios": [0.4, 0.5, 0.6]},  # worst
        {"op": "bce_kl_loss", "batch": 64, "dtype": "fp32", "speedup": 1.1, "ratios": [1.1, 0.9, 1.2]},  # a round < 0.95
        {"op": "LinearLeakyReLUDropout layer", "batch": 64, "dtype": "fp32", "speedup": 1.2, "ratios": [1.0, 1.2, 1.3]},
    ]
    (tmp_path / "op-rivals.json").write_text(json.dumps({"cuda": True, "results": cells}))
    rows = {name: (shown, ok) for name, shown, _, ok in check_targets.checks(tmp_path)}
    assert rows["reparameterize host time per eager call vs plain >= 1.0x (CPU)"] == ("2x", True)
    assert rows["bce_kl_loss host time per eager call vs plain >= 1.0x (CPU)"] == ("0.8x", False)
    rivals = "fwd+bwd vs plain modules >= 1.0x, no round under 0.95x, every batch and dtype (GPU, worst cell)"
    assert rows[f"reparameterize {rivals}"] == ("0.5x", False)
    assert rows[f"bce_kl_loss {rivals}"] == ("1.1x", False)
    assert rows[f"drop-in layer {rivals}"] == ("1.2x", True)
    assert rows["linear_leaky_relu_dropout layer host time per eager call vs plain >= 1.0x (CPU)"] == ("not measured", None)
    (tmp_path / "op-rivals.json").write_text(json.dumps({"cuda": False, "results": cells}))  # a CPU run: not the target
    rows = {name: (shown, ok) for name, shown, _, ok in check_targets.checks(tmp_path)}
    assert rows[f"drop-in layer {rivals}"] == ("not measured", None)
