"""`compare(config)`: the paper's GAN-vs-VAE comparison, measured. Trains both models (or continues and
reuses runs already in the output folder) to each checkpoint epoch, keeps a weights snapshot there,
scores every snapshot, and writes report.md with figures.

Layout of the output folder:
    runs/<model>/                          an ordinary fastgen run (resumable)
    runs/<model>/snapshots/epoch_NNNN.safetensors (+ .eval.json)
    reference.json, report.md, figures/
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastgen.comparison.report import write_report
from fastgen.config import MODELS, TrainConfig
from fastgen.environment import device_name, resolve_device
from fastgen.errors import FastgenError, Interrupted
from fastgen.evaluation.classifier import load_evaluator
from fastgen.evaluation.scoring import eval_path, evaluate, reference_scores
from fastgen.files import atomic_write, atomic_write_text
from fastgen.models.weights import WEIGHTS_FILE, load
from fastgen.training import checkpoint as run_state
from fastgen.training import train
from fastgen.training.distributed import launched_by_torchrun

GRID_SEED = 1234  # the same latent draws at every epoch, so the grids show one generator improving
# --quick: a smoke test of the whole pipeline (minutes on a CPU), not a result to quote.
QUICK = {"epochs": (10, 50), "train_images": 1024, "n": 1000, "iwae_k": 10}
FULL = {"epochs": (10, 50, 200), "train_images": None, "n": 10_000, "iwae_k": 100}
REUSE_KEYS = ("dataset", "seed", "train_images")  # settings a reused run must share with this comparison


@dataclass
class CompareConfig:
    out: str = "compare"
    epochs: tuple | None = None  # None: 10, 50, 200 (quick: 10, 50)
    quick: bool = False
    n: int | None = None  # generated samples scored per checkpoint; None: 10000 (quick: 1000)
    iwae_k: int | None = None  # None: 100 (quick: 10)
    train_images: int | None = None  # None: the whole training split (quick: 1024)
    seed: int = 0
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
        return CompareConfig(**values)


def _say(config: CompareConfig, message: str) -> None:
    if not config.quiet:
        print(f"fastgen.compare: {message}", file=sys.stderr, flush=True)


def snapshot_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "snapshots" / f"epoch_{epoch:04d}.safetensors"


def _check_reusable(run_dir: Path, model: str, config: CompareConfig) -> None:
    try:
        saved = json.loads((run_dir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        raise FastgenError(f"{run_dir} holds something that is not a readable fastgen run; choose another --out") from None
    wanted = {"dataset": config.dataset, "seed": config.seed, "train_images": config.train_images}
    different = [f"{key} {saved.get(key)!r} (wanted {wanted[key]!r})" for key in REUSE_KEYS if saved.get(key) != wanted[key]]
    if saved.get("model") != model or different:
        raise FastgenError(
            f"{run_dir} holds a run with other settings ({', '.join(different) or saved.get('model')}); choose another --out"
        )


def _train_to(model: str, epoch: int, run_dir: Path, config: CompareConfig) -> Path:
    """The weights snapshot of `model` at `epoch`, training or continuing the run to get there if needed."""
    snapshot = snapshot_path(run_dir, epoch)
    if snapshot.exists():
        return snapshot
    started = (run_dir / run_state.CHECKPOINT_FILE).exists()
    if started:
        position = run_state.load(run_dir).position
        done = position.epoch - 1
        if done > epoch or (done == epoch and position.step_in_epoch):
            raise FastgenError(f"{run_dir} is already past epoch {epoch} and kept no snapshot of it; choose another --out")
    _say(config, f"training the {model} to epoch {epoch}" + (" (continuing its run)" if started else ""))
    common = dict(epochs=epoch, device=config.device, quiet=config.quiet)
    try:
        if started:
            train(TrainConfig(resume=str(run_dir), **common))
        else:
            train(
                TrainConfig(
                    model=model,
                    out=str(run_dir),
                    overwrite=True,
                    seed=config.seed,
                    dataset=config.dataset,
                    data_dir=config.data_dir,
                    download=config.download,
                    train_images=config.train_images,
                    **common,
                )
            )
    except Interrupted as exc:
        raise Interrupted(
            f"the {model} run was interrupted and checkpointed; run the same fastgen.compare command "
            "again to continue the comparison",
            exc.exit_code - 128,
        ) from None
    snapshot.parent.mkdir(exist_ok=True)
    atomic_write(snapshot, lambda tmp: shutil.copyfile(run_dir / WEIGHTS_FILE, tmp))
    return snapshot


def _scores(snapshot: Path, config: CompareConfig, evaluator) -> dict:
    """The snapshot's scores, reusing its .eval.json when it was made with the same settings."""
    path = eval_path(snapshot)
    wanted = {"n": config.n, "seed": config.seed, "iwae_k": config.iwae_k}
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if (
                all(saved.get(k) == v for k, v in wanted.items() if k != "iwae_k" or saved["model"] == "vae")
                and saved["evaluator"]["sha256"] == evaluator.sha256
            ):
                return saved
        except (OSError, ValueError, KeyError):
            pass  # unreadable: score again
    result = evaluate(
        snapshot,
        config.n,
        iwae_k=config.iwae_k,
        seed=config.seed,
        device=config.device,
        dataset=config.dataset,
        data_dir=config.data_dir,
        download=config.download,
        evaluator=evaluator,
        reference=False,
    )
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _read_metrics(run_dir: Path) -> list[dict]:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["epoch"]] = row  # a resumed epoch's row replaces the partial one
    return [rows[e] for e in sorted(rows)]


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
    results: dict[str, dict] = {"config": asdict(config), "device": device_name(device), "models": {}}
    for model in MODELS:
        run_dir = out / "runs" / model
        if (run_dir / "config.json").exists():
            _check_reusable(run_dir, model, config)
        scores = {}
        for epoch in config.epochs:
            snapshot = _train_to(model, epoch, run_dir, config)
            _say(config, f"scoring the {model} at epoch {epoch}")
            scores[epoch] = _scores(snapshot, config, evaluator)
        results["models"][model] = {"scores": scores, "metrics": _read_metrics(run_dir), "run": str(run_dir)}
    _say(config, "scoring the reference rows (training split, uniform noise)")
    evaluator.to(device)
    results["reference"] = reference_scores(evaluator, config.n, config.seed, config.data_dir, config.download)
    results["evaluator"] = {"test_accuracy": evaluator.accuracy, "sha256": evaluator.sha256}
    results["compare_s"] = time.perf_counter() - start
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    return write_report(out, results, _grid_samples(results))


def _grid_samples(results: dict) -> dict[int, dict]:
    """64 images per model per checkpoint epoch, from the same latent draws (GRID_SEED) every time."""
    return {
        epoch: {
            model: load(snapshot_path(Path(results["models"][model]["run"]), epoch)).sample(64, seed=GRID_SEED)
            for model in MODELS
        }
        for epoch in results["config"]["epochs"]
    }
