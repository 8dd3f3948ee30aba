"""`compare(config)`: the paper's GAN-vs-VAE comparison, measured over several training seeds. Trains
each model's seeds as one group of seeds (or continues and reuses the group already in the output folder) to
each checkpoint epoch, keeps a weights snapshot there (raw and moving-average weights), scores every
snapshot with both, measures the scores' own sampling error on the first seed's snapshots, and writes
report.md with figures.

Layout of the output folder:
    runs/<model>/group.json                the model's group of seeds (resumable: fastgen.train --resume runs/<model>)
    runs/<model>/seed_<S>/                 one replica: an ordinary fastgen run folder
    runs/<model>/seed_<S>/snapshots/epoch_NNNN.safetensors
        (+ epoch_NNNN.<raw|ema>.eval.json, and for the first seed epoch_NNNN.<raw|ema>.draws.json)
    results.json, report.md, figures/
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastgen.comparison.report import write_report
from fastgen.config import EMA_DECAY, MODELS, TrainConfig
from fastgen.environment import device_name, resolve_device
from fastgen.errors import FastgenError, Interrupted
from fastgen.evaluation.classifier import load_evaluator
from fastgen.evaluation.scoring import SCORE_NAMES, evaluate, reference_scores, score_images
from fastgen.files import atomic_write, atomic_write_text
from fastgen.models.weights import DEFAULT_WEIGHTS, WEIGHT_KINDS, WEIGHTS_FILE, load
from fastgen.training import group as seed_group
from fastgen.training import train
from fastgen.training.distributed import launched_by_torchrun

GRID_SEED = 1234  # the same latent draws at every epoch, so the grids show one generator improving
# --quick: a smoke test of the whole pipeline (minutes on a CPU), not a result to quote.
QUICK = {"epochs": (10, 50), "train_images": 1024, "n": 1000, "iwae_k": 10, "seeds": 2, "draws": 2}
# Five seeds, trained as one group (three are the fewest from which a spread and Welch's test mean anything;
# more tighten every interval); five independent draws of n samples measure a score's own sampling error at n.
FULL = {"epochs": (10, 50, 200), "train_images": None, "n": 10_000, "iwae_k": 100, "seeds": 5, "draws": 5}
REUSE_KEYS = ("dataset", "seed", "seeds", "train_images", "ema")  # settings a reused group must share with this comparison
DRAW_SEED = 10_000  # the sampling-error draws use seeds DRAW_SEED + i, never the scoring seed


@dataclass
class CompareConfig:
    out: str = "compare"
    epochs: tuple | None = None  # None: 10, 50, 200 (quick: 10, 50)
    quick: bool = False
    n: int | None = None  # generated samples scored per checkpoint; None: 10000 (quick: 1000)
    iwae_k: int | None = None  # None: 100 (quick: 10)
    train_images: int | None = None  # None: the whole training split (quick: 1024)
    seed: int = 0  # the first training seed; the others follow it (seed, seed + 1, ...)
    seeds: int | None = None  # training seeds per model, trained as one group; None: 5 (quick: 2)
    draws: int | None = None  # independent draws of n samples measuring a score's sampling error; None: 5 (quick: 2)
    ema: float = EMA_DECAY  # the runs' moving-average decay (both raw and averaged weights are scored)
    dataset: str = "mnist"
    device: str = "auto"
    data_dir: str | None = None
    download: bool = True
    quiet: bool = False

    def resolved(self) -> CompareConfig:
        values = asdict(self)
        for key, value in (QUICK if self.quick else FULL).items():
            if values[key] is None:
                values[key] = value
        values["epochs"] = tuple(sorted(set(values["epochs"])))
        if not values["epochs"] or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in values["epochs"]):
            raise FastgenError(f"--epochs must be positive integers, got {self.epochs}")
        for key, minimum in (("seeds", 2), ("draws", 2)):
            if isinstance(values[key], bool) or not isinstance(values[key], int) or values[key] < minimum:
                raise FastgenError(f"--{key} must be an integer >= {minimum}, got {values[key]!r}")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0 < self.ema < 1:
            raise FastgenError(f"--ema must be in (0, 1) for a comparison (it scores raw and averaged weights), got {self.ema!r}")
        return CompareConfig(**values)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))


def _say(config: CompareConfig, message: str) -> None:
    if not config.quiet:
        print(f"fastgen.compare: {message}", file=sys.stderr, flush=True)


def snapshot_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "snapshots" / f"epoch_{epoch:04d}.safetensors"


def group_path(out: Path, model: str) -> Path:
    return out / "runs" / model


def run_path(out: Path, model: str, seed: int) -> Path:
    return seed_group.replica_dir(group_path(out, model), seed)


def _check_reusable(group_dir: Path, model: str, config: CompareConfig) -> None:
    """Refuse a folder whose runs this comparison cannot continue: another group's settings, or single-seed runs."""
    if not seed_group.is_group(group_dir):
        if any(group_dir.glob("seed_*/config.json")):
            raise FastgenError(
                f"{group_dir} holds single-seed runs of an older fastgen.compare (seeds now train as one group); "
                "choose another --out"
            )
        return
    saved = seed_group.read(group_dir)["config"]
    wanted = {"dataset": config.dataset, "seed": config.seed, "seeds": config.seeds}
    wanted.update(train_images=config.train_images, ema=config.ema)
    different = [f"{key} {saved.get(key)!r} (wanted {wanted[key]!r})" for key in REUSE_KEYS if saved.get(key) != wanted[key]]
    if saved.get("model") != model or different:
        raise FastgenError(
            f"{group_dir} holds runs with other settings ({', '.join(different) or saved.get('model')}); choose another --out"
        )


def _train_to(model: str, epoch: int, config: CompareConfig) -> None:
    """The weights snapshots of every seed of `model` at `epoch`, training or continuing its group to get there."""
    group_dir = group_path(Path(config.out), model)
    snapshots = {seed: snapshot_path(run_path(Path(config.out), model, seed), epoch) for seed in config.seed_list}
    if all(path.exists() for path in snapshots.values()):
        return
    position = seed_group.read(group_dir)["position"] if seed_group.is_group(group_dir) else None
    started = position is not None
    if started:
        done = position["epoch"] - 1
        if done > epoch or (done == epoch and position["step_in_epoch"]):
            raise FastgenError(f"{group_dir} is already past epoch {epoch} and kept no snapshot of it; choose another --out")
    seeds = f"seeds {config.seed_list[0]}-{config.seed_list[-1]}"
    _say(config, f"training the {model} ({seeds}, one group) to epoch {epoch}" + (" (continuing its runs)" if started else ""))
    common = dict(epochs=epoch, device=config.device, quiet=config.quiet)
    new_run = dict(model=model, out=str(group_dir), overwrite=True, seed=config.seed, seeds=config.seeds, ema=config.ema)
    new_run.update(dataset=config.dataset, data_dir=config.data_dir, download=config.download, train_images=config.train_images)
    try:
        train(TrainConfig(resume=str(group_dir), **common) if started else TrainConfig(**new_run, **common))
    except Interrupted as exc:
        raise Interrupted(
            f"the {model} runs were interrupted and checkpointed; run the same fastgen.compare command "
            "again to continue the comparison",
            exc.exit_code - 128,
        ) from None
    for seed, snapshot in snapshots.items():
        snapshot.parent.mkdir(exist_ok=True)
        weights = run_path(Path(config.out), model, seed) / WEIGHTS_FILE
        atomic_write(snapshot, lambda tmp, weights=weights: shutil.copyfile(weights, tmp))


def _cached(path: Path, wanted: dict, evaluator, compute) -> dict:
    """`compute()`'s result, saved at `path`; reused when saved with the same `wanted` settings and evaluator."""
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if all(saved.get(k) == v for k, v in wanted.items()) and saved["evaluator"]["sha256"] == evaluator.sha256:
                return saved
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: compute again
    result = {**compute(), **wanted, "evaluator": {"test_accuracy": evaluator.accuracy, "sha256": evaluator.sha256}}
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _scores(snapshot: Path, weights: str, config: CompareConfig, evaluator) -> dict:
    """The snapshot's scores with its raw or averaged weights."""
    wanted = {"n": config.n, "seed": config.seed, "weights": weights, "iwae_k": config.iwae_k}
    options = dict(iwae_k=config.iwae_k, seed=config.seed, device=config.device, dataset=config.dataset)
    options.update(data_dir=config.data_dir, download=config.download, evaluator=evaluator, reference=False, weights=weights)
    path = snapshot.with_suffix(f".{weights}.eval.json")
    return _cached(path, wanted, evaluator, lambda: evaluate(snapshot, config.n, **options))


def _sampling_error(snapshot: Path, weights: str, config: CompareConfig, evaluator) -> dict:
    """Each score's standard deviation over `config.draws` independent draws of n samples from one snapshot:
    the score's own sampling error at n (fresh draws from the generator rather than a bootstrap, which
    would duplicate samples and shrink the k-NN radii of precision/recall)."""

    def compute() -> dict:
        model = load(snapshot, device=resolve_device(config.device), weights=weights)
        draws = [
            score_images(model.sample(config.n, seed=DRAW_SEED + i), evaluator, config.data_dir, config.download)
            for i in range(config.draws)
        ]
        return {name: statistics.stdev(d[name] for d in draws) for name in SCORE_NAMES}

    wanted = {"n": config.n, "draws": config.draws, "weights": weights}
    return _cached(snapshot.with_suffix(f".{weights}.draws.json"), wanted, evaluator, compute)


def _read_metrics(run_dir: Path) -> list[dict]:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["epoch"]] = row  # a resumed epoch's row replaces the partial one
    return [rows[e] for e in sorted(rows)]


def _train_all(config: CompareConfig) -> None:
    """Every group to every checkpoint epoch, earliest epoch first across models, so that an interrupted
    comparison already holds complete early checkpoints; the time each stage took goes to stages.json."""
    out = Path(config.out)
    for model in MODELS:
        _check_reusable(group_path(out, model), model, config)
    for epoch in config.epochs:
        for model in MODELS:
            start = time.perf_counter()
            _train_to(model, epoch, config)
            _record_stage(out, f"train {model} to epoch {epoch}", time.perf_counter() - start)


def _record_stage(out: Path, name: str, seconds: float) -> None:
    """Add (or replace) a stage's wall time in stages.json: how long each part of the comparison took here."""
    path = out / "stages.json"
    try:
        stages = json.loads(path.read_text())
    except (OSError, ValueError):
        stages = {}
    if name not in stages or seconds > 1.0:  # a stage skipped on a rerun keeps the time it took when it ran
        stages[name] = round(seconds, 2)
    atomic_write_text(path, json.dumps(stages, indent=2) + "\n")


def _model_results(model: str, config: CompareConfig, evaluator) -> dict:
    out, first = Path(config.out), config.seed
    runs = {s: {"run": str(run_path(out, model, s)), "metrics": _read_metrics(run_path(out, model, s))} for s in config.seed_list}
    scores = {kind: {e: {} for e in config.epochs} for kind in WEIGHT_KINDS}
    sampling = {kind: {} for kind in WEIGHT_KINDS}
    for epoch in config.epochs:
        _say(config, f"scoring the {model} at epoch {epoch} ({len(config.seed_list)} seeds, raw and averaged weights)")
        for seed in config.seed_list:
            for kind in WEIGHT_KINDS:
                scores[kind][epoch][seed] = _scores(snapshot_path(run_path(out, model, seed), epoch), kind, config, evaluator)
        for kind in WEIGHT_KINDS:
            sampling[kind][epoch] = _sampling_error(snapshot_path(run_path(out, model, first), epoch), kind, config, evaluator)
    return {"runs": runs, "scores": scores, "sampling": sampling}


def compare(config: CompareConfig) -> Path:
    """Run the comparison as `config` says; return the path of report.md."""
    if launched_by_torchrun():
        raise FastgenError("fastgen.compare runs as one process (train a run with torchrun, then compare in one process)")
    config = config.resolved()
    out = Path(config.out)
    device = resolve_device(config.device)
    if device.type == "cpu" and not config.quick:
        _say(
            config,
            "training on the CPU: the full comparison takes hours here (minutes on a GPU); "
            "progress is shown per epoch, and an interrupted comparison continues where it stopped",
        )
    start = time.perf_counter()
    evaluator = load_evaluator(config.dataset, data_dir=config.data_dir, download=config.download, progress=not config.quiet)
    _train_all(config)
    results: dict = {"config": asdict(config), "device": device_name(device), "seeds": config.seed_list}
    results["weights"] = {model: DEFAULT_WEIGHTS[model] for model in MODELS}
    results["models"] = {}
    for model in MODELS:
        stage_start = time.perf_counter()
        results["models"][model] = _model_results(model, config, evaluator)
        _record_stage(out, f"score {model}", time.perf_counter() - stage_start)
    _say(config, "scoring the reference rows (training split, uniform noise)")
    evaluator.to(device)
    results["reference"] = reference_scores(evaluator, config.n, config.seed, config.data_dir, config.download)
    results["evaluator"] = {"test_accuracy": evaluator.accuracy, "sha256": evaluator.sha256}
    results["compare_s"] = time.perf_counter() - start
    results["stages"] = [[name, seconds] for name, seconds in json.loads((out / "stages.json").read_text()).items()]
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    return write_report(out, results, _grid_samples(results))


def _grid_samples(results: dict) -> dict[int, dict]:
    """64 images per model per checkpoint epoch (first seed, the model's default weights), from the same
    latent draws (GRID_SEED) every time."""
    first = results["seeds"][0]
    return {
        epoch: {
            model: load(
                snapshot_path(Path(results["models"][model]["runs"][first]["run"]), epoch), weights=results["weights"][model]
            ).sample(64, seed=GRID_SEED)
            for model in MODELS
        }
        for epoch in results["config"]["epochs"]
    }
