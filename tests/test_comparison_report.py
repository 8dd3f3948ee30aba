"""The comparison's statistics over training seeds (fastgen.comparison.stats) on inputs whose answer is
known, and report.md written from synthetic results: tables that parse, figures that exist, and verdicts
that follow the data (a winner only where the synthetic data make one clear)."""

import re
import statistics

import pytest
import scipy.stats
import torch
from matplotlib import image

from fastgen.comparison.report import write_report
from fastgen.comparison.stats import ema_effect, summary, winner
from fastgen.evaluation.scoring import SCORE_NAMES

# ---------------------------------------------------------------- stats


def test_summary_is_mean_sample_sd_min_max_n():
    s = summary([1, 2, 3, 4])
    assert s["mean"] == 2.5 and s["sd"] == pytest.approx(1.2909944, rel=1e-6)  # ddof=1 (ddof=0 gives 1.118)
    assert (s["min"], s["max"], s["n"]) == (1.0, 4.0, 4)
    assert summary([7.5]) == {"mean": 7.5, "sd": None, "min": 7.5, "max": 7.5, "n": 1}
    with pytest.raises(ValueError):
        summary([])


def test_winner_takes_the_better_mean_in_the_metrics_direction():
    low, high = [1.0, 1.1, 0.9], [5.0, 5.2, 4.9]
    won, p = winner(low, high, higher_is_better=False)
    assert won == "gan" and p < 0.001
    assert winner(low, high, higher_is_better=True)[0] == "vae"
    assert winner(high, low, higher_is_better=True)[0] == "gan"
    assert winner(high, low, higher_is_better=False)[0] == "vae"


def test_winner_is_welchs_test_at_level_alpha():
    gan, vae = [1.0, 1.2, 0.8, 1.1], [1.5, 3.0, 2.0]  # unequal variances: Student's test would call a winner here
    assert scipy.stats.ttest_ind(gan, vae).pvalue < 0.05
    welch = scipy.stats.ttest_ind(gan, vae, equal_var=False).pvalue
    assert winner(gan, vae, higher_is_better=False) == (None, pytest.approx(welch)) and welch > 0.1
    gan, vae = [1.0, 1.2, 0.8, 1.1], [1.5, 2.2, 1.9]
    welch = scipy.stats.ttest_ind(gan, vae, equal_var=False).pvalue
    assert winner(gan, vae, higher_is_better=False) == ("gan", pytest.approx(welch)) and 0.01 < welch < 0.05
    assert winner(gan, vae, higher_is_better=False, alpha=0.01) == (None, pytest.approx(welch))


def test_overlapping_noisy_samples_are_not_distinguishable():
    gan, vae = [0.41, 0.55, 0.48, 0.60, 0.37], [0.52, 0.44, 0.58, 0.39, 0.50]
    won, p = winner(gan, vae, higher_is_better=True)
    assert won is None and p > 0.5
    assert winner([3.0, 4.0], [4.0, 3.0], higher_is_better=True) == (None, pytest.approx(1.0))


def test_winner_needs_two_finite_seeds_per_model():
    assert winner([1.0], [5.0, 5.1], higher_is_better=False) == (None, None)
    assert winner([1.0, 1.1], [5.0], higher_is_better=False) == (None, None)
    assert winner([1.0], [5.0], higher_is_better=False) == (None, None)
    assert winner([1.0, float("nan")], [5.0, 5.1], higher_is_better=False) == (None, None)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the sample without spread
def test_winner_without_any_spread_in_either_model():
    assert winner([2.0, 2.0, 2.0], [3.0, 3.0], higher_is_better=False) == ("gan", 0.0)
    assert winner([2.0, 2.0, 2.0], [3.0, 3.0], higher_is_better=True) == ("vae", 0.0)
    assert winner([2.0, 2.0], [2.0, 2.0, 2.0], higher_is_better=True) == (None, 1.0)
    welch = scipy.stats.ttest_ind([2.0] * 3, [3.0, 3.5, 4.0], equal_var=False).pvalue  # one model with spread: as usual
    assert winner([2.0, 2.0, 2.0], [3.0, 3.5, 4.0], higher_is_better=False) == ("gan", pytest.approx(welch))


def test_ema_effect_helps_hurts_or_none_paired_by_seed():
    raw = [10.0, 50.0, 90.0]  # seeds far apart: only a paired test sees the shift
    ema = [9.0, 49.1, 88.9]
    assert scipy.stats.ttest_ind(raw, ema).pvalue > 0.5
    effect = ema_effect(raw, ema, higher_is_better=False)
    assert effect["verdict"] == "helps" and effect["p"] < 0.01 and effect["n"] == 3
    assert effect["mean_difference"] == pytest.approx(-1.0)
    assert ema_effect(raw, ema, higher_is_better=True)["verdict"] == "hurts"
    same = ema_effect(raw, [10.5, 49.4, 90.2], higher_is_better=False)
    assert same["verdict"] == "no detectable effect" and same["p"] > 0.5
    assert same["p"] == pytest.approx(scipy.stats.ttest_rel([10.5, 49.4, 90.2], raw).pvalue)


def test_ema_effect_with_one_seed_or_no_spread_in_the_differences():
    one = ema_effect([3.0], [2.0], higher_is_better=False)
    assert one == {"mean_difference": -1.0, "p": None, "n": 1, "verdict": "not testable with 1 seed"}
    shifted = ema_effect([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], higher_is_better=True)
    assert (shifted["verdict"], shifted["p"]) == ("helps", 0.0)
    unchanged = ema_effect([1.0, 2.0], [1.0, 2.0], higher_is_better=True)
    assert (unchanged["verdict"], unchanged["p"], unchanged["mean_difference"]) == ("no detectable effect", 1.0, 0.0)
    assert ema_effect([1.0, float("inf")], [1.0, 2.0], higher_is_better=True)["p"] is None
    with pytest.raises(ValueError):
        ema_effect([1.0, 2.0], [1.0], higher_is_better=True)


# ---------------------------------------------------------------- synthetic results

EPOCHS = (10, 50)
# metric -> (GAN raw mean, VAE raw mean, spread over seeds)
TRUTH = {
    "frechet_distance": (5.0, 20.0, 0.2),  # GAN clearly better (lower)
    "inception_style_score": (7.0, 9.0, 0.1),  # VAE clearly better (higher)
    "class_kl_to_uniform": (0.050, 0.052, 0.02),  # overlapping: not distinguishable
    "precision": (0.80, 0.60, 0.01),  # GAN clearly better (higher)
    "recall": (0.50, 0.51, 0.05),  # overlapping
}
OFFSETS = {"gan": (-1.0, 0.2, 0.8), "vae": (0.6, -0.9, 0.3)}  # per seed, in units of the spread
JITTER = (0.01, -0.02, 0.012)  # per seed, EMA - raw noise in units of the spread
EMA_SHIFT = {  # GAN: EMA helps on 2 metrics and hurts on 1; VAE: hurts on 1
    "gan": {"frechet_distance": -1.0, "precision": 0.05, "inception_style_score": -0.5},
    "vae": {"frechet_distance": 2.0},
}
KINDS = ("raw", "ema")
SAMPLING_SD = {"gan": 0.01, "vae": 10.0}  # in units of the spread: GAN seeds dominate, VAE sampling dominates


def _score(model: str, kind: str, epoch: int, i: int, seed: int) -> dict:
    scores = {}
    for name, (gan, vae, spread) in TRUTH.items():
        value = (gan if model == "gan" else vae) + OFFSETS[model][i] * spread
        if kind == "ema":
            value += EMA_SHIFT[model].get(name, 0.0) + JITTER[i] * spread
        scores[name] = value * (2 if name == "frechet_distance" and epoch == 10 else 1)
    scores.update(class_histogram=[0.1] * 10, n=1000, seed=seed)
    if model == "vae":
        ema_gain = 1.0 + JITTER[i] if kind == "ema" else 0.0  # the VAE's EMA lowers its test loss, not its IWAE NLL
        scores.update(test_loss=100.0 - epoch / 10 + i - ema_gain, iwae_nll=95.0 - epoch / 10 + i, iwae_k=100)
    return scores


def _metrics(model: str, seed: int) -> list[dict]:
    rows = []
    for epoch in range(1, 51):
        row = {"epoch": epoch, "epoch_s": (60.0 if epoch == 1 else 40.0) + seed, "samples_per_s": 1500.0 + seed}
        losses = ("d_loss", "g_loss") if model == "gan" else ("loss", "test_loss", "bce", "kl")
        row.update({name: 100.0 / epoch + k + seed for k, name in enumerate(losses)})
        rows.append(row)
    return rows


def make_results(seeds=(0, 1, 2), quick=False) -> dict:
    models = {}
    for model in ("gan", "vae"):
        models[model] = {
            "runs": {s: {"run": f"runs/{model}/seed_{s}", "metrics": _metrics(model, s)} for s in seeds},
            "scores": {k: {e: {s: _score(model, k, e, i, s) for i, s in enumerate(seeds)} for e in EPOCHS} for k in KINDS},
            "sampling": {
                k: {e: {"draws": 5, **{n: SAMPLING_SD[model] * TRUTH[n][2] for n in SCORE_NAMES}} for e in EPOCHS} for k in KINDS
            },
        }
    reference = {
        "train_split": {
            "frechet_distance": 0.5,
            "inception_style_score": 9.8,
            "class_kl_to_uniform": 0.001,
            "precision": 0.75,
            "recall": 0.75,
        },
        "uniform_noise": {
            "frechet_distance": 900.0,
            "inception_style_score": 1.0,
            "class_kl_to_uniform": 2.2,
            "precision": 0.0,
            "recall": 0.0,
        },
    }
    return {
        "config": dict(
            out="cmp",
            epochs=EPOCHS,
            quick=quick,
            n=1000,
            iwae_k=100,
            train_images=None,
            seed=0,
            seeds=len(seeds),
            dataset="mnist",
            ema=0.999,
        ),
        "device": "test CPU (2 threads)",
        "seeds": list(seeds),
        "weights": {"gan": "ema", "vae": "raw"},
        "models": models,
        "reference": reference,
        "evaluator": {"test_accuracy": 0.9917, "sha256": "0" * 64},
        "compare_s": 600.0,
        "stages": [["train gan to epoch 10", 61.5], ["train vae to epoch 10", 12.25], ["score gan", 30.0]],
    }


def _samples() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {e: {m: torch.rand((64, 1, 28, 28), generator=generator) for m in ("gan", "vae")} for e in EPOCHS}


CONCLUSION = "## Conclusion (from the numbers above)"


def _tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in `text`, as rows of stripped cells."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def _table(text: str, heading: str) -> dict[str, dict[str, str]]:
    """The first table after the line `heading`: row label -> column header -> cell."""
    table = _tables(text.split("\n" + heading + "\n", 1)[1])[0]
    return {row[0]: dict(zip(table[0][1:], row[1:])) for row in table[2:]}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[int, tuple]:
    """n seeds -> (output folder, report.md text), for 3 seeds and for 1."""
    written = {}
    for seeds in ((0, 1, 2), (0,)):
        out = tmp_path_factory.mktemp(f"report-{len(seeds)}")
        path = write_report(out, make_results(seeds, quick=len(seeds) == 1), _samples())
        assert path == out / "report.md"
        written[len(seeds)] = (out, path.read_text())
    return written


# ---------------------------------------------------------------- report


@pytest.mark.parametrize("n_seeds", [3, 1])
def test_report_tables_parse_and_figures_exist(reports, n_seeds):
    out, text = reports[n_seeds]
    tables = _tables(text)
    assert len(tables) == 6  # scores, sampling, conclusion, EMA, training time, stages
    for table in tables:
        assert len({len(row) for row in table}) == 1, table
        assert all(set(cell) <= set("-") and cell for cell in table[1]), table[1]
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(figures) == {
        "figures/metrics.png",
        "figures/losses.png",
        "figures/samples_epoch_0010.png",
        "figures/samples_epoch_0050.png",
    }
    for name in figures:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        pixels = image.imread(out / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels[..., :3].std() > 0.02, name


def test_report_with_three_seeds_names_the_clear_winners_only(reports):
    _, text = reports[3]
    assert "seeds 0, 1, 2 (3 per model)" in text and "decay 0.999" in text and "do not quote" not in text
    assert "Welch's two-sided t-test" in text and "α = 0.05" in text
    verdicts = _table(text, CONCLUSION)
    for epoch in ("10", "50"):
        assert verdicts[epoch]["Fréchet distance"].startswith("**GAN** (p")
        assert verdicts[epoch]["IS-style score"].startswith("**VAE** (p")
        assert verdicts[epoch]["precision"].startswith("**GAN** (p")
        for name in ("class KL to uniform", "recall"):
            assert verdicts[epoch][name].startswith("not distinguishable with 3 seeds (p = "), verdicts[epoch][name]
    assert "- At epoch 50 the **GAN** is better on Fréchet distance, precision." in text
    assert "- At epoch 50 the **VAE** is better on IS-style score." in text
    assert "- At epoch 50, not distinguishable with 3 seeds: class KL to uniform, recall." in text


def test_report_score_cells_are_mean_and_sd_of_the_headline_weights(reports):
    _, text = reports[3]
    scores = _table(text, "## Scores")
    gan_fd = [_score("gan", "ema", 50, i, s)["frechet_distance"] for i, s in enumerate((0, 1, 2))]
    vae_fd = [_score("vae", "raw", 50, i, s)["frechet_distance"] for i, s in enumerate((0, 1, 2))]
    assert scores["GAN epoch 50"]["weights"] == "EMA" and scores["VAE epoch 50"]["weights"] == "raw"
    assert scores["GAN epoch 50"]["Fréchet distance"] == f"{statistics.mean(gan_fd):.3g} ± {statistics.stdev(gan_fd):.3g}"
    assert scores["VAE epoch 50"]["Fréchet distance"] == f"{statistics.mean(vae_fd):.3g} ± {statistics.stdev(vae_fd):.3g}"
    assert scores["VAE epoch 50"]["test loss"] == "96.00 ± 1.00" and scores["GAN epoch 50"]["test loss"] == ""
    assert scores["*train split*"]["Fréchet distance"] == "0.5" and scores["*uniform noise*"]["weights"] == ""
    assert "sample standard deviation" in text and "retrains with a new seed" in text


def test_report_says_which_spread_dominates(reports):
    _, text = reports[3]
    assert "- GAN: the sd over seeds is the larger on 10 of 10 metric-epochs; the spread over training seeds dominates" in text
    assert "- VAE: the sd over seeds is the larger on 0 of 10 metric-epochs; the sampling error at n dominates" in text
    sampling = _table(text, "### Sampling error vs spread over seeds")
    seeds_sd, sampling_sd = sampling["VAE epoch 10"]["precision"].split(" / ")
    assert float(sampling_sd) == pytest.approx(0.1) and float(seeds_sd) < 0.1


def test_report_ema_section_follows_the_paired_verdicts(reports):
    _, text = reports[3]
    cells = _table(text, "## EMA of the weights")
    assert cells["GAN epoch 50"]["Fréchet distance"].startswith("-1, helps (p")
    assert ", helps (p" in cells["GAN epoch 10"]["precision"]
    assert ", hurts (p" in cells["GAN epoch 50"]["IS-style score"]
    assert ", no detectable effect (p" in cells["GAN epoch 50"]["recall"]
    assert ", hurts (p" in cells["VAE epoch 50"]["Fréchet distance"]
    assert ", no detectable effect (p" in cells["VAE epoch 50"]["precision"]
    assert ", helps (p" in cells["VAE epoch 10"]["VAE test loss"] and cells["GAN epoch 10"]["VAE test loss"] == ""
    assert cells["VAE epoch 50"]["VAE IWAE NLL"].startswith("0, no detectable effect")
    assert "- GAN: EMA helps on 4 of 10 score-epochs and hurts on 2; the numbers favour the EMA weights" in text
    assert "- VAE: EMA helps on 2 of 14 score-epochs and hurts on 2; the numbers favour neither" in text


def test_report_timing_table(reports):
    _, text = reports[3]
    timing = _table(text, "## Training time")
    gan = timing["GAN"]
    # epoch_s: 60 + seed at epoch 1, 40 + seed after; 50 epochs for seeds 0, 1, 2
    assert (gan["seeds"], gan["epochs per seed"], gan["median s/epoch"]) == ("3", "50", "41.00")
    assert gan["first epoch s (median over seeds)"] == "61.00" and gan["training s (sum over seeds)"] == "6,210"
    assert gan["median images/s"] == "1,501" and "This command took 10.0 min" in text
    stages = text.split("This command took")[1]
    assert "| train gan to epoch 10 | 61.5 s |\n| train vae to epoch 10 | 12.2 s |\n| score gan | 30.0 s |" in stages


def test_report_with_one_seed_names_no_winner(reports):
    _, text = reports[1]
    assert "seeds 0 (1 per model)" in text and "do not quote" in text
    verdicts = _table(text, CONCLUSION)
    assert all(cell == "not distinguishable with 1 seed" for row in verdicts.values() for cell in row.values())
    assert "** (p" not in text  # no winner anywhere
    assert "the **GAN** is better on no metric" in text and "the **VAE** is better on no metric" in text
    assert "±" not in text and "One training seed" in text
    scores = _table(text, "## Scores")
    assert scores["GAN epoch 50"]["Fréchet distance"] == f"{_score('gan', 'ema', 50, 0, 0)['frechet_distance']:.3g}"
    assert "there is no spread over seeds to set against the sampling error" in text
    assert "not testable with 1 seed" in text and "the paired test cannot run" in text
    timing = _table(text, "## Training time")
    assert (
        timing["GAN"]["first epoch s (median over seeds)"] == "60.00" and timing["GAN"]["training s (sum over seeds)"] == "2,020"
    )


@pytest.mark.parametrize("epoch, expected", [(10, "recall (10: GAN)"), (50, "recall (10: not distinguishable)")])
def test_conclusion_names_earlier_verdicts_that_differ(epoch, expected):
    """A clear GAN lead on recall at one epoch only: the conclusion lists the epoch-10 verdict in words."""
    from fastgen.comparison.report import _conclusion

    results = make_results()
    for seed_scores in results["models"]["gan"]["scores"]["ema"][epoch].values():
        seed_scores["recall"] += 0.5
    assert f"- Earlier checkpoints differ on: {expected}." in _conclusion(results, list(EPOCHS))
