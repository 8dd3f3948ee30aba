"""bench/op_rivals.py: each op and its plain rival run the same work, rounds interleaved, and the record holds
what bench/check_targets.py reads."""

import json

import torch

from bench import op_rivals


def test_the_rivals_compute_what_fastgen_computes():
    """The plain layer starts from the fused layer's weights, and without dropout both give the same output."""
    import fastgen

    assert set(op_rivals._layer(3, torch.float32, torch.device("cpu"), "eager")) == set(op_rivals.VARIANTS)
    fused = fastgen.LinearLeakyReLUDropout(op_rivals.IN_FEATURES, op_rivals.OUT_FEATURES, op_rivals.SLOPE, 0.0)
    plain = torch.nn.Sequential(torch.nn.Linear(op_rivals.IN_FEATURES, op_rivals.OUT_FEATURES), torch.nn.LeakyReLU(0.2))
    plain[0].load_state_dict({"weight": fused.weight.detach(), "bias": fused.bias.detach()})
    x = torch.randn(3, op_rivals.IN_FEATURES)
    torch.testing.assert_close(fused(x), plain(x))


def test_it_writes_every_cell_with_its_rounds(tmp_path):
    args = ["--batches", "2", "--dtypes", "fp32", "--rounds", "3", "--calls", "2", "--out", str(tmp_path)]
    results = op_rivals.main(args)
    assert [r["op"] for r in results] == list(op_rivals.CASES)
    record = json.loads((tmp_path / "op-rivals.json").read_text())
    assert record["cuda"] is False and record["calls"] == 2
    for cell in record["results"]:
        assert len(cell["ratios"]) == 3 and all(len(cell["us"][v]) == 3 for v in op_rivals.VARIANTS) and cell["speedup"] > 0
    assert "| bce_kl_loss | 2 | fp32 |" in (tmp_path / "op-rivals.md").read_text()
