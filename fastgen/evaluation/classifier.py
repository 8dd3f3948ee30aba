"""The evaluator network: a small CNN digit classifier whose features and softmax the metrics use.

It is trained by fastgen itself, on the CPU, deterministically (fixed seed, fixed data order), so
every user's evaluator for a dataset is the same network and scores are comparable across machines
and devices. It is cached in the user's cache folder with a SHA-256 checksum and its test accuracy,
and retrained when the file is missing, corrupt, or was trained by another recipe.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from fastgen.data import cache_dir, load_split
from fastgen.errors import FastgenError
from fastgen.files import atomic_write, atomic_write_text

FEATURES = 128  # width of the penultimate layer the Fréchet distance and precision/recall use


class Classifier(nn.Module):
    """1x28x28 in [0, 1] -> conv 32 -> pool -> conv 64 -> pool -> 128 features -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.hidden = nn.Linear(64 * 7 * 7, FEATURES)
        self.out = nn.Linear(FEATURES, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.reshape(-1, 1, 28, 28).float() - 0.5) / 0.5
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(images))


@dataclass(frozen=True)
class Recipe:
    """How the evaluator is trained; part of the cache key, so a changed recipe retrains."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    train_images: int | None = None  # None: the whole training split (tests use a slice)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Evaluator:
    network: Classifier
    dataset: str
    accuracy: float  # on the dataset's test split
    sha256: str  # of the cached weights file
    path: Path

    def to(self, device) -> Evaluator:
        self.network.to(device)
        return self

    @torch.no_grad()
    def features_and_probs(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features (N, 128), softmax (N, 10)) in float64 on the CPU, for images in [0, 1]."""
        device = self.network.out.weight.device
        feats, probs = [], []
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device)
            f = self.network.features(x)
            feats.append(f.double().cpu())
            probs.append(torch.softmax(self.network.out(f).double(), dim=1).cpu())
        return torch.cat(feats), torch.cat(probs)


def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], what the evaluator takes."""
    return images_uint8.float().div_(255.0).unsqueeze(1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.no_grad()
def _accuracy(network: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    network.eval()
    correct = sum(
        int((network(to_unit(images[i : i + 1000])).argmax(1) == labels[i : i + 1000]).sum()) for i in range(0, len(images), 1000)
    )
    return correct / len(images)


def train_classifier(
    dataset: str, recipe: Recipe, data_dir=None, download: bool = True, progress: bool = True
) -> tuple[Classifier, float]:
    """Train the evaluator on the CPU, deterministically; return it with its test accuracy."""
    images, labels = load_split(dataset, "train", data_dir, download)
    test_images, test_labels = load_split(dataset, "test", data_dir, download)
    if recipe.train_images is not None:
        images, labels = images[: recipe.train_images], labels[: recipe.train_images]
    gen = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        network = Classifier()
    optimizer = torch.optim.Adam(network.parameters(), lr=recipe.lr)
    steps_per_epoch = len(images) // recipe.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=max(1, steps_per_epoch)
    )
    start = time.perf_counter()
    network.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(images), generator=gen)[: steps_per_epoch * recipe.batch_size]
        for batch in order.view(-1, recipe.batch_size):
            loss = F.cross_entropy(network(to_unit(images[batch])), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if progress:
            print(f"fastgen: evaluator epoch {epoch + 1}/{recipe.epochs} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return network.eval(), _accuracy(network, test_images, test_labels)


def evaluator_path(dataset: str, recipe: Recipe, folder: Path | None = None) -> Path:
    return Path(folder or cache_dir() / "evaluators") / f"{dataset}-{recipe.key()}.safetensors"


def _read_cached(path: Path, dataset: str) -> Evaluator | None:
    """The cached evaluator, or None when it is missing, corrupt, or its checksum does not match."""
    record = path.with_suffix(".json")
    try:
        info = json.loads(record.read_text())
        if _sha256(path) != info["sha256"]:
            return None
        network = Classifier()
        network.load_state_dict(load_file(str(path)))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        return None
    return Evaluator(network.eval(), dataset, float(info["accuracy"]), info["sha256"], path)


def load_evaluator(
    dataset: str = "mnist",
    recipe: Recipe = Recipe(),
    data_dir=None,
    download: bool = True,
    folder: Path | None = None,
    progress: bool = True,
) -> Evaluator:
    """The cached evaluator for `dataset`, training (and caching) it first when missing or corrupt."""
    path = evaluator_path(dataset, recipe, folder)
    cached = _read_cached(path, dataset) if path.exists() else None
    if cached is not None:
        return cached
    if progress:
        why = "corrupt or from another recipe" if path.exists() else "not cached yet"
        print(f"fastgen: training the {dataset} evaluator on the CPU ({why}; about a minute on 2 cores, once)", file=sys.stderr)
    with torch.random.fork_rng(devices=[]):
        network, accuracy = train_classifier(dataset, recipe, data_dir, download, progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {key: value.contiguous() for key, value in network.state_dict().items()}
        # No safetensors metadata: it is serialised in random key order, and the file's bytes should be
        # a pure function of the weights (the JSON record beside it holds dataset, accuracy, recipe).
        atomic_write(path, lambda tmp: save_file(state, tmp))
        digest = _sha256(path)
        atomic_write_text(
            path.with_suffix(".json"),
            json.dumps({"dataset": dataset, "accuracy": accuracy, "sha256": digest, "recipe": asdict(recipe)}, indent=2) + "\n",
        )
    except OSError as exc:
        raise FastgenError(f"cannot write the evaluator cache {path}: {exc.strerror or exc}") from None
    return Evaluator(network, dataset, accuracy, digest, path)
