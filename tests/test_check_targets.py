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
            ("reparameterize forward+backward batch 64 fp32", "eager", "reference", 1.0),
            ("reparameterize forward+backward batch 64 fp32", "fastgen", "variant", 0.5),
            ("reparameterize forward+backward batch 512 bf16", "eager", "reference", 1.0),
            ("reparameterize forward+backward batch 512 bf16", "fastgen", "variant", 2.0),  # the worst cell: 0.5x
        ],
    )
    rows = {name: (shown, ok) for name, shown, _, ok in check_targets.checks(tmp_path)}
    assert rows["reparameterize host time per eager call vs plain >= 1.0x (CPU)"] == ("2x", True)
    assert rows["bce_kl_loss host time per eager call vs plain >= 1.0x (CPU)"] == ("0.8x", False)
    assert rows["reparameterize fwd+bwd vs plain modules >= 1.0x, every batch and dtype (GPU, worst cell)"] == ("0.5x", False)
    assert rows["linear_leaky_relu_dropout layer host time per eager call vs plain >= 1.0x (CPU)"] == ("not measured", None)
