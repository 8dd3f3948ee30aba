"""Files that must never be half-written or silently corrupt: atomic writes, and safetensors files that
carry a SHA-256 of their own bytes, checked on every read."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from fastgen.errors import FastgenError

CHECKSUM_KEY = "fastgen_sha256"
_PLACEHOLDER = "0" * 64


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: a crash leaves the old file intact. A write
    the system refuses (folder gone, disk full, no permission) is a FastgenError naming the file."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise FastgenError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _checksum_field(data: bytes, digest: str) -> bytes:
    return f'"{CHECKSUM_KEY}":"{digest}"'.encode()


def _header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little") if len(data) >= 8 else 0


def write_checked_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file whose metadata holds the SHA-256 of the whole file, computed with the digest
    itself zeroed: any byte changed afterwards (header, metadata or tensor data) fails the check."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    data = save_safetensors_bytes(tensors, metadata={**metadata, CHECKSUM_KEY: _PLACEHOLDER})
    field = _checksum_field(data, _PLACEHOLDER)
    at = data.find(field, 8, _header_end(data))
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data[:at] + _checksum_field(data, digest) + data[at + len(field) :])


def read_checked_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file written by `write_checked_safetensors`; a FastgenError naming the
    file if it is unreadable, carries no checksum, or any of its bytes changed since it was written."""
    path = Path(path)
    try:
        data = path.read_bytes()
        end = _header_end(data)
        metadata = json.loads(data[8:end]).get("__metadata__") or {}
        digest = metadata.get(CHECKSUM_KEY, "")
        field = _checksum_field(data, digest)
        at = data.find(field, 8, end)
        if len(digest) != 64 or at < 0:
            raise FastgenError(f"{path} carries no fastgen checksum: not a {what} written by this fastgen, or corrupt")
        zeroed = data[:at] + _checksum_field(data, _PLACEHOLDER) + data[at + len(field) :]
        if hashlib.sha256(zeroed).hexdigest() != digest:
            raise FastgenError(f"{path} fails its checksum: the {what} is corrupt (changed since it was written)")
        tensors = load_safetensors_bytes(data)
    except FastgenError:
        raise
    except (SafetensorError, OSError, ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise FastgenError(
            f"{path} is not a readable {what} ({type(exc).__name__}: {str(exc)[:120]}); it may be truncated or corrupt"
        ) from None
    metadata = {key: value for key, value in metadata.items() if key != CHECKSUM_KEY}
    return tensors, metadata
