"""bench/interleaved.py: every variant timed once per repeat in its own process, ratios within a repeat."""

import re

import pytest

from bench import interleaved


@pytest.mark.slow
def test_interleaved_table_has_a_row_per_variant_and_a_column_per_repeat(capsys):
    interleaved.main(["--model", "vae", "--repeats", "2", "--variants", "eager", "native eager"])
    out, err = capsys.readouterr()
    assert len(re.findall(r"^repeat \d, (eager|native eager): (\d+\.\d+ ?){5}$", err, re.M)) == 4, err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "repeat 1" not in line}
    assert set(rows) == {"eager", "native eager"}
    assert rows["eager"].endswith("| 1.00x - 1.00x |")
    assert len(re.findall(r"\| \d+\.\d\d ", rows["native eager"])) == 2


def test_one_repeat_times_each_variant_in_its_own_process(capsys):
    interleaved.main(["--model", "vae", "--repeats", "1", "--variants", "eager"])
    out, err = capsys.readouterr()
    assert len(re.findall(r"^repeat 1, eager: (\d+\.\d+ ?){5}$", err, re.M)) == 1, err
    assert any(line.startswith("| eager |") and line.endswith("| 1.00x - 1.00x |") for line in out.splitlines()), out
