"""The generated documents: README.md's and docs/performance.md's generated sections and docs/figures/speed.*
equal what `python -m bench.report --docs` writes from the committed results (bench/generated_docs.py)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench import generated_docs
from bench.report import main as report_main

REPO = Path(__file__).resolve().parent.parent


def test_committed_documents_match_the_results():
    stale = [str(p) for p, text in generated_docs.rendered().items() if (REPO / p).read_text() != text]
    assert not stale, f"{stale} differ from bench/results/ and docs/comparison/: run python -m bench.report --docs"


def test_committed_figure_draws_its_data(tmp_path):
    """The PNG is what its committed data draws (pixels within a small tolerance: font rendering varies a little)."""
    import matplotlib.image

    drawn = tmp_path / "speed.png"
    generated_docs.draw_figure(json.loads((REPO / generated_docs.FIGURE_DATA).read_text()), drawn)
    committed, fresh = matplotlib.image.imread(REPO / generated_docs.FIGURE), matplotlib.image.imread(drawn)
    assert committed.shape == fresh.shape
    assert np.abs(committed - fresh).mean() < 0.01


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def _bench_json(path: Path, device: str, rows: list[tuple[str, str, str, float]]) -> None:
    """A pytest-benchmark file holding (group, variant, role, samples/s) rows."""
    benchmarks = [
        {
            "group": group,
            "name": variant,
            "stats": {"median": 1.0 / rate},
            "extra_info": {
                "device": device,
                "device_name": "Test CPU (2 threads)",
                "torch": "t",
                "triton": "tr",
                "fastgen": "f",
                "variant": variant,
                "role": role,
                "samples_per_s": rate,
            },
        }
        for group, variant, role, rate in rows
    ]
    path.write_text(json.dumps({"datetime": "2030-01-02T03:04:05", "benchmarks": benchmarks}))


def test_glance_table_states_speedups_over_plain_and_what_is_missing(tmp_path):
    folder = tmp_path / "cpu-test"
    folder.mkdir()
    _bench_json(
        folder / "bench-steps.json",
        "cpu",
        [
            ("end-to-end gan batch 32", generated_docs.PLAIN, "reference", 1000.0),
            ("end-to-end gan batch 32", "fastgen", "variant", 2500.0),
            ("end-to-end vae batch 100", "fastgen", "variant", 9000.0),
        ],
    )
    (run,) = generated_docs.device_runs(tmp_path)
    assert run["name"] == "Test CPU (2 threads), no bf16" and run["date"] == "2030-01-02"
    table = "\n".join(generated_docs.glance_table(run))
    assert "| GAN, batch 32 | 1,000 | not measured | 2,500 (2.50x) | no bf16: as fastgen |" in table
    assert "| VAE, batch 100 | not measured | not measured | 9,000 | no bf16: as fastgen |" in table


def test_a_document_without_its_markers_is_refused():
    with pytest.raises(ValueError, match="has no"):
        generated_docs.fill("no markers here", {"speed": ["x"]}, "README.md")


def test_check_fails_when_a_result_changes_without_its_docs(tmp_path, monkeypatch, capsys):
    """A new result in bench/results/ without rerunning --docs makes `--check` fail (what CI runs)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("README.md", "docs", "bench/results"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, repo / part)
    assert generated_docs.rendered(repo) == {p: (repo / p).read_text() for p in generated_docs.rendered(repo)}
    folder = repo / "bench" / "results" / "cpu-new"
    folder.mkdir()
    _bench_json(folder / "bench.json", "cpu", [("end-to-end gan batch 32", "fastgen", "variant", 1.0)])
    monkeypatch.setattr(generated_docs, "REPO", repo)
    monkeypatch.setattr(generated_docs, "RESULTS", repo / "bench" / "results")
    assert report_main(["--check"]) == 1
    assert "run python -m bench.report --docs" in capsys.readouterr().err
