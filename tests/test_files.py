"""Weights files and checkpoints carry a SHA-256 of their bytes: a byte changed anywhere is refused on
load with one line naming the file, and a file written by the current code always loads."""

import json

import pytest
import torch

import fastgen
from fastgen.errors import FastgenError
from fastgen.files import read_checked_safetensors, write_checked_safetensors
from fastgen.models.weights import save_weights
from fastgen.training import checkpoint as run_state


def _regions(data: bytes) -> dict[str, int]:
    """An offset inside each region of a safetensors file: its 8-byte length, the JSON header's tensor
    table, the metadata, and the tensor data."""
    header_end = 8 + int.from_bytes(data[:8], "little")
    header = data[8:header_end]
    metadata_at = 8 + header.index(b"__metadata__")
    return {
        "length": 2,
        "tensor table": 8 + header.index(b"dtype") + 9,
        "metadata": metadata_at + 40,
        "tensor data": header_end + (len(data) - header_end) // 2,
    }


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x24
    path.write_bytes(bytes(data))


def test_a_written_file_reads_back_whole(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7], dtype=torch.int64)}
    write_checked_safetensors(path, tensors, {"note": "x"})
    back, metadata = read_checked_safetensors(path, "test file")
    assert metadata == {"note": "x"} and all(torch.equal(back[k], v) for k, v in tensors.items())


def test_a_write_into_a_deleted_run_folder_is_one_line(tmp_path):
    """The run folder deleted under a running run: a FastgenError naming the file, which the command line
    prints in one line (a failed write keeping the old file: tests/test_resume.py)."""
    gone = tmp_path / "deleted-run" / "checkpoint.safetensors"
    with pytest.raises(FastgenError, match=r"^cannot write .*deleted-run/checkpoint.safetensors: No such file"):
        write_checked_safetensors(gone, {"a": torch.zeros(2)}, {})


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(path, {"generator": fastgen.Generator()}, "gan", {"model": "gan", "dataset": "mnist"})
    return path


@pytest.mark.parametrize("region", ["length", "tensor table", "metadata", "tensor data"])
def test_a_flipped_byte_in_a_weights_file_is_refused(weights_file, region):
    fastgen.load(weights_file)  # loads before the flip
    _flip(weights_file, _regions(weights_file.read_bytes())[region])
    with pytest.raises(FastgenError) as info:
        fastgen.load(weights_file)
    assert str(weights_file) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("region", ["length", "tensor table", "metadata", "tensor data"])
def test_a_flipped_byte_in_a_checkpoint_is_refused(tmp_path, region):
    from fastgen.config import TrainConfig
    from fastgen.training.trainers import GANTrainer

    config = TrainConfig(model="gan").resolved()
    trainer = GANTrainer(config, torch.device("cpu"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / run_state.CHECKPOINT_FILE
    run_state.save(path, trainer, run_state.Position(1, 0, 0), torch.zeros(4), torch.get_rng_state(), config.to_dict(), [], "gan")
    assert run_state.load(run_dir).position == run_state.Position(1, 0, 0)
    _flip(path, _regions(path.read_bytes())[region])
    with pytest.raises(FastgenError) as info:
        run_state.load(run_dir)
    assert str(path) in str(info.value)


def test_a_file_without_the_checksum_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(
        {"generator.out.bias": torch.zeros(784)},
        str(path),
        metadata={"fastgen_format": "2", "model": "gan", "config": json.dumps({})},
    )
    with pytest.raises(FastgenError, match="no fastgen checksum"):
        fastgen.load(path)


def _saved_run(tmp_path, device: str):
    from fastgen.config import TrainConfig
    from fastgen.training.trainers import VAETrainer

    config = TrainConfig(model="vae", device=device).resolved()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_state.save(
        run_dir / run_state.CHECKPOINT_FILE,
        VAETrainer(config, torch.device("cpu")),
        run_state.Position(2, 0, 10),
        torch.zeros(3),
        torch.get_rng_state(),
        config.to_dict(),
        [],
        "vae",
    )
    return run_dir


def test_a_resume_keeps_the_device_the_run_trained_on(tmp_path):
    from fastgen.training.run import resumed_config

    run_dir = _saved_run(tmp_path, "cpu")
    for asked in ("auto", None):  # the CLI's and the API's "not asked for"
        config, _ = resumed_config(fastgen.TrainConfig(resume=str(run_dir), **({"device": asked} if asked else {})))
        assert config.device == "cpu"


def test_a_resume_on_another_kind_of_device_is_refused_in_one_line(tmp_path):
    from fastgen.training.run import resumed_config

    run_dir = _saved_run(tmp_path, "cuda")  # as a GPU run records it
    with pytest.raises(FastgenError, match="trained on cuda and resumes only there") as info:
        resumed_config(fastgen.TrainConfig(resume=str(run_dir), device="cpu"))
    assert "\n" not in str(info.value)
