"""bench/kernel_profile.py: the table counts each kernel's launches and time per step, largest first."""

import torch

from bench import kernel_profile


def test_the_table_counts_launches_and_time_per_step():
    def work():
        a = torch.randn(64, 64)
        for _ in range(3):
            a = torch.mm(a, a).tanh()
        return a

    rows = kernel_profile.profile(work, torch.device("cpu"), steps=2)
    by_name = {r["name"]: r for r in rows}
    assert by_name["aten::mm"]["per_step"] == 3 and by_name["aten::tanh"]["per_step"] == 3
    assert [r["us_per_step"] for r in rows] == sorted((r["us_per_step"] for r in rows), reverse=True)
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-6
