"""The IDX reader and the data search, on small files the tests write themselves, and real MNIST's files."""

import numpy as np
import pytest
import torch

from fastgen.data import DeviceSplit, find_data_dir, load_split, read_idx, search_dirs
from fastgen.errors import DataError
from tests.helpers import SYNTHETIC_TEST, SYNTHETIC_TRAIN, train_cli, write_idx, write_split


@pytest.fixture(autouse=True)
def _isolated_search(monkeypatch, tmp_path):
    """No user cache and no $FASTGEN_DATA leak into these tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTGEN_DATA", raising=False)


@pytest.mark.parametrize("gz", [False, True])
def test_valid_files_load_exactly(tmp_path, gz):
    images, labels = write_split(tmp_path, gz=gz)
    got_images, got_labels = load_split("mnist", "train", tmp_path, download=False)
    assert got_images.dtype == torch.uint8 and np.array_equal(got_images.numpy(), images)
    assert np.array_equal(got_labels.numpy(), labels)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 28, 28)), truncate=100)
    with pytest.raises(DataError, match="truncated"):
        read_idx(path, 3)


def test_wrong_magic_is_a_clear_error(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 28, 28)), magic=0x0D03)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path, 3)


def test_header_shorter_than_its_dimensions(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "x", 3)


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "x.gz", 3)


def test_label_count_mismatch(tmp_path):
    write_split(tmp_path, n=10)
    write_idx(tmp_path / "MNIST/raw/train-labels-idx1-ubyte", np.zeros(9))
    with pytest.raises(DataError, match="9 labels"):
        load_split("mnist", "train", tmp_path, download=False)


def test_missing_data_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGEN_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_split("fashion-mnist", "train", None, download=False)
    message = str(info.value)
    for place in (tmp_path / "env", tmp_path / "cache" / "fastgen" / "data", "/usr/share/datasets/fashion-mnist"):
        assert str(place) in message
    assert "--data-dir" in message and "\n" not in message


def test_search_order_env_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGEN_DATA", "/env")
    cache = str(tmp_path / "cache" / "fastgen" / "data")
    assert [str(d) for d in search_dirs("mnist")] == ["/env", cache]
    assert [str(d) for d in search_dirs("fashion-mnist")] == ["/env", cache, "/usr/share/datasets/fashion-mnist"]
    monkeypatch.delenv("FASTGEN_DATA")
    assert [str(d) for d in search_dirs("mnist")] == [cache]


def test_without_data_dir_fastgen_data_comes_before_the_cache(tmp_path, monkeypatch):
    write_split(tmp_path / "env", n=5)
    write_split(tmp_path / "cache" / "fastgen" / "data", n=7)
    monkeypatch.setenv("FASTGEN_DATA", str(tmp_path / "env"))
    assert load_split("mnist", "train", None, download=False)[0].shape[0] == 5
    assert find_data_dir("mnist") == tmp_path / "env"
    monkeypatch.delenv("FASTGEN_DATA")
    assert load_split("mnist", "train", None, download=False)[0].shape[0] == 7
    assert find_data_dir("mnist") == tmp_path / "cache" / "fastgen" / "data"
    assert find_data_dir("mnist", "test") is None  # only the training split was written


def test_an_explicit_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch):
    write_split(tmp_path / "flag", n=3)
    write_split(tmp_path / "env", n=5)
    monkeypatch.setenv("FASTGEN_DATA", str(tmp_path / "env"))
    assert load_split("mnist", "train", tmp_path / "flag", download=False)[0].shape[0] == 3
    (tmp_path / "empty").mkdir()
    for missing, says in ((tmp_path / "empty", "holds no mnist train split"), (tmp_path / "nowhere", "does not exist")):
        with pytest.raises(DataError, match=says) as info:
            load_split("mnist", "train", missing, download=False)
        assert str(missing) in str(info.value) and str(tmp_path / "env") not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "empty"])
def test_train_refuses_an_explicit_data_dir_without_data_even_when_fastgen_data_holds_it(mnist, tmp_path, case):
    """The valid $FASTGEN_DATA is not a fallback for a mistyped --data-dir: one line naming the flag's folder, exit 2."""
    data_dir = tmp_path / case
    if case == "empty":
        data_dir.mkdir()
    result = train_cli(
        "--model",
        "gan",
        "--max-steps",
        "1",
        "--data-dir",
        str(data_dir),
        "--out",
        str(tmp_path / "run"),
        env={"FASTGEN_DATA": mnist},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--data-dir {data_dir} " in lines[0], result.stderr
    assert ("does not exist" if case == "missing" else "holds no mnist train split") in lines[0]
    assert str(mnist) not in lines[0] and not (tmp_path / "run").exists()


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision

    class NoNetwork:  # torchvision's dataset class, failing as it does without a network
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Error downloading:\nTried https://example/, got:\n<urlopen error> network unreachable\n")

    monkeypatch.setattr(torchvision.datasets, "MNIST", NoNetwork)
    with pytest.raises(DataError, match="downloading it failed.*network unreachable") as info:
        load_split("mnist", "train", tmp_path, download=True)
    assert "\n" not in str(info.value)


def test_device_split_scales_on_the_device_and_batches_without_repeats(tmp_path):
    write_split(tmp_path, n=10)
    gan = DeviceSplit.load("mnist", "train", "cpu", -1.0, tmp_path, download=False)
    x = gan.batch(torch.arange(10))
    assert x.shape == (10, 784) and x.min() >= -1 and x.max() <= 1
    expected = gan.images.reshape(10, -1).float() / 127.5 - 1
    assert torch.allclose(x, expected, atol=1e-6)
    batches = gan.epoch_batches(3, torch.Generator().manual_seed(0))
    assert batches.shape == (3, 3) and len(set(batches.flatten().tolist())) == 9  # the partial batch is dropped


def test_real_mnist_loads(real_mnist):
    """The real files (what the tests of quality read) have MNIST's sizes, and fastgen reads both splits."""
    images, labels = load_split("mnist", "test", real_mnist, download=False)
    assert images.shape == (10_000, 28, 28) and labels.max() == 9 and labels.min() == 0
    assert load_split("mnist", "train", real_mnist, download=False)[0].shape == (60_000, 28, 28)


def test_the_synthetic_mnist_has_both_splits_of_ten_distinct_digits(mnist):
    """The tests of the pipeline run on these: torchvision's layout, both splits, every label, ink on black."""
    for split, n in (("train", SYNTHETIC_TRAIN), ("test", SYNTHETIC_TEST)):
        images, labels = load_split("mnist", split, mnist, download=False)
        assert images.shape == (n, 28, 28) and sorted(labels.unique().tolist()) == list(range(10))
        ink = images.float().mean((1, 2))
        assert 10 < ink.mean() < 80 and images[:, 0, :].float().mean() < 5  # strokes, not noise; margins empty
        means = torch.stack([images[labels == d].float().mean(0) for d in range(10)]).flatten(1)
        assert torch.cdist(means, means).add(torch.eye(10) * 1e9).min() > 100  # every digit its own shape


def test_fashion_mnist_from_debians_gzipped_folder(tmp_path, monkeypatch):
    """`apt-get install dataset-fashion-mnist` puts the gzipped IDX files directly in one folder."""
    import fastgen.data

    images, _ = write_split(tmp_path / "debian", n=4, gz=True, folder=".")
    monkeypatch.setattr(fastgen.data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    got, _ = load_split("fashion-mnist", "train", None, download=False)
    assert np.array_equal(got.numpy(), images)
