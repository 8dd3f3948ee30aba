"""The IDX reader and the data search, on small files the tests write themselves, and on real MNIST."""
import gzip
import struct

import numpy as np
import pytest
import torch

from fastgen.data import DeviceSplit, load_split, read_idx, search_dirs
from fastgen.errors import DataError


def write_idx(path, array: np.ndarray, magic=None, truncate=0, gz=False):
    magic = magic if magic is not None else 0x800 + array.ndim
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - truncate] if truncate else raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_split(root, n=10, gz=False, folder="MNIST/raw"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28))
    labels = rng.integers(0, 10, n)
    suffix = ".gz" if gz else ""
    write_idx(root / folder / f"train-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(root / folder / f"train-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return images, labels


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
        load_split("fashion-mnist", "train", tmp_path / "flag", download=False)
    message = str(info.value)
    for place in (tmp_path / "flag", tmp_path / "env", tmp_path / "cache" / "fastgen" / "data",
                  "/usr/share/datasets/fashion-mnist"):
        assert str(place) in message
    assert "\n" not in message


def test_search_order_flag_then_env_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGEN_DATA", "/env")
    dirs = search_dirs("mnist", "/flag")
    assert [str(d) for d in dirs] == ["/flag", "/env", str(tmp_path / "cache" / "fastgen" / "data")]


def test_flag_wins_over_env(tmp_path, monkeypatch):
    flag_images, _ = write_split(tmp_path / "flag", n=3)
    write_split(tmp_path / "env", n=5)
    monkeypatch.setenv("FASTGEN_DATA", str(tmp_path / "env"))
    assert load_split("mnist", "train", tmp_path / "flag", download=False)[0].shape[0] == 3
    assert load_split("mnist", "train", None, download=False)[0].shape[0] == 5


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    import fastgen.data

    def no_network(dataset, root):
        raise RuntimeError("Error downloading:\nTried https://example/, got:\n<urlopen error> network unreachable\n")

    monkeypatch.setattr(fastgen.data, "_download", no_network)
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


def test_real_mnist_loads(mnist):
    images, labels = load_split("mnist", "test", mnist, download=False)
    assert images.shape == (10_000, 28, 28) and labels.max() == 9 and labels.min() == 0


def test_fashion_mnist_from_debians_gzipped_folder(tmp_path, monkeypatch):
    """`apt-get install dataset-fashion-mnist` puts the gzipped IDX files directly in one folder."""
    import fastgen.data

    images, _ = write_split(tmp_path / "debian", n=4, gz=True, folder=".")
    monkeypatch.setattr(fastgen.data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    got, _ = load_split("fashion-mnist", "train", tmp_path / "empty", download=False)
    assert np.array_equal(got.numpy(), images)
