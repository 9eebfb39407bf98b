"""The bridge's paired data: which pairs a config names, and its Dataset of paired tensors.

The pairs are read by :mod:`sarbridge.data.pairs`; ``data.format`` names the layout:

* ``hoss``: identity pairs of a HOSS-layout folder's ``bounding_box_train`` (every optical x SAR
  image of a ship id, or a seeded choice of at most ``data.max_pairs_per_id``);
* ``synthetic``: the same-pose pairs of a generated set's ``pairs.csv`` (the training ids' pairs;
  the held-out ids' with ``split="test"``);
* ``folder``: ``opt/`` (or ``optical/``) and ``sar/`` folders whose files match by name (a
  trailing modality token such as ``_RGB`` / ``_SAR`` is ignored when matching);
* ``auto``: ``synthetic`` when ``pairs.csv`` exists, ``folder`` when ``opt/`` + ``sar/`` exist,
  else ``hoss``.

Validation holds out whole identities (:func:`sarbridge.data.pairs.split_pairs` with
``min_groups=1``: one held-out id is enough to measure the bridge). Images become the 8-bit,
3-channel pictures the re-identification model sees (:meth:`PreprocessSpec.to_uint8`), resized to
the model resolution and scaled to [-1, 1] (:class:`BridgePairDataset`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.data.pairs import PairItem, Source, load_source, read_pairs
from sarbridge.data.records import OPTICAL, SAR, parse_modality
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.bridge.config import PairDataConfig

__all__ = [
    "BridgePairDataset",
    "detect_pair_format",
    "load_pairs",
    "pairs_summary",
    "prepare_uint8",
    "resize_uint8",
]

PAIRS_CSV = "pairs.csv"
#: Group name prefix of a pair that is its own group (no identity in its layout).
_OWN_GROUP = "pair:"


def detect_pair_format(root: str | Path) -> str:
    """``synthetic``, ``folder`` or ``hoss`` for a data folder.

    Raises:
        DataError: the folder does not exist.
    """
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"data folder '{r}' not found", "pass an existing folder to --data")
    if (r / PAIRS_CSV).is_file():
        return "synthetic"
    if ((r / "opt").is_dir() or (r / "optical").is_dir()) and (r / "sar").is_dir():
        return "folder"
    return "hoss"


def load_pairs(cfg: PairDataConfig, seed: int = 0, split: str = "train") -> tuple[list[PairItem], str]:
    """The pairs a config names, and the format actually used.

    A pair whose layout gives it no identity (``folder``) is its own group, named ``pair:<i>``
    by its position: :func:`~sarbridge.data.pairs.split_pairs` then holds out the same pairs for
    a seed as bridge runs always did.

    Args:
        cfg: the ``data`` section.
        seed: seed of the ``max_pairs_per_id`` choice (``hoss``).
        split: identities of a ``synthetic`` set: ``train``, ``test`` or ``all``.

    Raises:
        ConfigError: ``data.root`` is empty.
        DataError: see the readers of :mod:`sarbridge.data.pairs`.
    """
    if not cfg.root:
        raise ConfigError("data.root is empty", "pass --data DIR (a HOSS folder, a synthetic set or opt/ + sar/)")
    if not Path(cfg.root).is_dir():
        raise DataError(f"data folder '{cfg.root}' not found", "pass an existing folder to --data")
    fmt = detect_pair_format(cfg.root) if cfg.format == "auto" else cfg.format
    kwargs: dict[str, Any] = {}
    if fmt in ("synthetic", "os"):
        kwargs["split"] = split
    elif fmt == "hoss":
        kwargs.update(max_pairs_per_id=cfg.max_pairs_per_id, seed=seed)
    items = read_pairs(cfg.root, fmt, **kwargs)
    items = [dataclasses.replace(it, group=f"{_OWN_GROUP}{i}") if it.group == it.key else it
             for i, it in enumerate(items)]
    return items, fmt


def pairs_summary(pairs: Sequence[PairItem]) -> dict[str, Any]:
    """Counts for logs and metrics files (``ids``: identities; pairs without one count none)."""
    return {"pairs": len(pairs), "ids": len({p.group for p in pairs if not p.group.startswith(_OWN_GROUP)}),
            "optical_images": len({p.optical for p in pairs}), "sar_images": len({p.sar for p in pairs})}


# --------------------------------------------------------------------------------------------
# images and the dataset
# --------------------------------------------------------------------------------------------


def resize_uint8(img: np.ndarray, resolution: Sequence[int]) -> np.ndarray:
    """Bicubic resize of a uint8 ``(H, W, 3)`` image to ``(height, width) = resolution``."""
    h, w = int(resolution[0]), int(resolution[1])
    if img.shape[0] == h and img.shape[1] == w:
        return np.ascontiguousarray(img)
    return np.array(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))


def prepare_uint8(
    raw: np.ndarray, modality: str, spec: PreprocessSpec, resolution: Sequence[int] | None = None
) -> np.ndarray:
    """Raw pixels of a modality -> the model's uint8 ``(H, W, 3)`` input at ``resolution``.

    uint8 3-channel images are taken as already converted (an optical chip, or a SAR image already
    in its 8-bit form); everything else goes through :meth:`PreprocessSpec.to_uint8`.
    """
    modality = parse_modality(modality)
    arr = np.asarray(raw)
    if not (arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3):
        arr = spec.to_uint8(arr, modality)
    return resize_uint8(arr, resolution or spec.image_size)


class BridgePairDataset(Dataset):
    """Optical/SAR pairs as tensors in [-1, 1] with identical random flips for both images.

    Items: ``{"optical": (3, H, W), "sar": (3, H, W), "index": int}``.

    Args:
        pairs: the pairs (image paths or loaders, see :func:`~sarbridge.data.pairs.load_source`).
        spec: preprocessing (SAR conversion).
        resolution: (H, W) of the model.
        hflip, vflip: probabilities of a horizontal / vertical flip (same for both images).
        cache: keep the decoded, resized uint8 images in memory.
    """

    def __init__(
        self,
        pairs: Sequence[PairItem],
        spec: PreprocessSpec,
        resolution: Sequence[int],
        hflip: float = 0.0,
        vflip: float = 0.0,
        cache: bool = True,
    ) -> None:
        self.pairs = list(pairs)
        self.spec = spec
        self.resolution = [int(resolution[0]), int(resolution[1])]
        self.hflip, self.vflip = float(hflip), float(vflip)
        self.cache = cache
        self._cache: dict[tuple[Source, str], np.ndarray] = {}  # per image: pairs share images

    def __len__(self) -> int:
        return len(self.pairs)

    def _image(self, src: Source, modality: str) -> np.ndarray:
        key = (src, modality)
        img = self._cache.get(key)
        if img is None:
            img = prepare_uint8(load_source(src), modality, self.spec, self.resolution)
            if self.cache:
                self._cache[key] = img
        return img

    def load_uint8(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (optical, SAR) uint8 ``(H, W, 3)`` images of a pair at the model resolution."""
        p = self.pairs[index]
        return self._image(p.optical, OPTICAL), self._image(p.sar, SAR)

    def __getitem__(self, index: int) -> dict[str, Any]:
        opt, sar = self.load_uint8(index)
        o = torch.tensor(opt).permute(2, 0, 1).float() / 127.5 - 1.0
        s = torch.tensor(sar).permute(2, 0, 1).float() / 127.5 - 1.0
        if self.hflip > 0 and float(torch.rand(())) < self.hflip:
            o, s = o.flip(-1), s.flip(-1)
        if self.vflip > 0 and float(torch.rand(())) < self.vflip:
            o, s = o.flip(-2), s.flip(-2)
        return {"optical": o, "sar": s, "index": index}
