"""Small shared helpers: atomic file writes, seeding and device selection."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.errors import SarbridgeError


def atomic_write(path: Path, writer: Callable[[Path], object]) -> None:
    """Write ``path`` through ``writer(tmp_path)`` then rename, so readers never see half a file.

    Args:
        path: final destination.
        writer: callable that writes the complete content to the temporary path it is given
            (its return value is ignored).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes owner-only files; results are for everyone
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write a UTF-8 text file."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically write JSON (indented, keys in insertion order)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda[:N]`` to a torch device; ``auto`` picks CUDA when present.

    Raises:
        SarbridgeError: CUDA was asked for but is not available.
    """

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SarbridgeError(f"device '{name}' requested but CUDA is not available", "use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SarbridgeError(f"device '{name}' is not known", "use auto, cpu, cuda or cuda:N") from None


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks."""

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
