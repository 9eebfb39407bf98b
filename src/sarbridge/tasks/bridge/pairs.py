"""Paired optical / SAR images for training the bridge.

Three sources (``data.format``):

* ``hoss``: identity-matched pairs from the training split (``bounding_box_train``) of a
  HOSS-layout folder: every optical x SAR image of the same ship id, or at most
  ``max_pairs_per_id`` of them (a seeded choice). Distractors (pid -1) are never paired. The two
  images of a pair show the same ship, not the same acquisition.
* ``synthetic``: the same-pose pairs listed in a generated set's ``pairs.csv``
  (:func:`sarbridge.data.synthetic.generate_hoss_dataset`); the training ids' pairs by default,
  the held-out test ids' pairs with ``split="test"``.
* ``folder``: any paired set: ``opt/`` (or ``optical/``) and ``sar/`` folders whose files match by
  name (a trailing modality token such as ``_RGB`` / ``_SAR`` is ignored when matching).

``auto`` picks ``synthetic`` when ``pairs.csv`` exists, ``folder`` when ``opt/`` + ``sar/`` exist,
else ``hoss``. Images become the 8-bit, 3-channel pictures the re-identification model sees
(:meth:`PreprocessSpec.to_uint8`), resized to the model resolution and scaled to [-1, 1].
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from sarbridge.data.io import IMAGE_SUFFIXES, read_image
from sarbridge.data.records import OPTICAL, SAR, parse_modality
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.core.errors import ConfigError, DataError

PAIRS_CSV = "pairs.csv"
_SYN_DIRS = ("bounding_box_train", "query", "bounding_box_test")


@dataclass(frozen=True)
class ImagePair:
    """One optical and one SAR image used as a training pair.

    Attributes:
        optical: optical image file.
        sar: SAR image file.
        pid: identity (ship id); -1 when unknown (generic folders).
        name: a short label (the matching key or the file stems).
    """

    optical: str
    sar: str
    pid: int = -1
    name: str = ""


@dataclass
class PairDataConfig:
    """Where the pairs come from and how images are prepared."""

    format: Literal["auto", "hoss", "synthetic", "folder"] = "auto"
    root: str = ""
    resolution: list[int] = field(default_factory=lambda: [256, 128])
    sar_preprocess: Literal["max", "percentile"] = "max"
    sar_alpha: float = 5.0
    gsd_optical: float = 0.75
    gsd_sar: float = 1.0
    max_pairs_per_id: int | None = None
    val_fraction: float = 0.1
    hflip: float = 0.5
    vflip: float = 0.0
    cache: bool = True
    num_workers: int = 0


def validate_pair_data_config(cfg: PairDataConfig, prefix: str = "data") -> None:
    """Range checks (types are checked by the config loader).

    Raises:
        ConfigError: naming the key.
    """
    if len(cfg.resolution) != 2 or min(cfg.resolution) < 4:
        raise ConfigError(f"{prefix}.resolution must be [height, width] >= 4, got {cfg.resolution}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"{prefix}.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    for key in ("hflip", "vflip"):
        v = getattr(cfg, key)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{prefix}.{key} is a probability in [0, 1], got {v}")
    if cfg.max_pairs_per_id is not None and cfg.max_pairs_per_id < 1:
        raise ConfigError(f"{prefix}.max_pairs_per_id must be >= 1 or null, got {cfg.max_pairs_per_id}")
    if not 0.0 <= cfg.sar_alpha < 100.0:
        raise ConfigError(f"{prefix}.sar_alpha must be a percentile in [0, 100), got {cfg.sar_alpha}")
    if cfg.num_workers < 0:
        raise ConfigError(f"{prefix}.num_workers must be >= 0, got {cfg.num_workers}")


def spec_for_pairs(cfg: PairDataConfig) -> PreprocessSpec:
    """The :class:`PreprocessSpec` of a pair config (``image_size`` = the model resolution)."""
    return PreprocessSpec(image_size=list(cfg.resolution), sar_preprocess=cfg.sar_preprocess,
                          sar_alpha=cfg.sar_alpha, gsd_optical=cfg.gsd_optical, gsd_sar=cfg.gsd_sar)


# --------------------------------------------------------------------------------------------
# pair lists
# --------------------------------------------------------------------------------------------


def _find_folder(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


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
    if _find_folder(r, ("opt", "optical")) is not None and (r / "sar").is_dir():
        return "folder"
    return "hoss"


def hoss_identity_pairs(root: str | Path, max_pairs_per_id: int | None = None, seed: int = 0) -> list[ImagePair]:
    """Every optical x SAR pair of the same identity in ``bounding_box_train`` (optionally capped).

    Raises:
        DataError: missing folders, badly named files, or no identity with both modalities.
    """
    from sarbridge.data.hoss import TRAIN_DIR, find_hoss_root, read_hoss_folder

    base = find_hoss_root(root)
    samples = read_hoss_folder(base / TRAIN_DIR, "train")
    by_pid: dict[int, dict[str, list[str]]] = {}
    for s in samples:
        if s.pid < 0:
            continue
        by_pid.setdefault(s.pid, {OPTICAL: [], SAR: []})[s.modality].append(s.path)
    rng = np.random.default_rng(seed)
    pairs: list[ImagePair] = []
    for pid in sorted(by_pid):
        opt, sar = sorted(by_pid[pid][OPTICAL]), sorted(by_pid[pid][SAR])
        cand = [(o, s) for o in opt for s in sar]
        if max_pairs_per_id is not None and len(cand) > max_pairs_per_id:
            keep = sorted(rng.choice(len(cand), size=max_pairs_per_id, replace=False).tolist())
            cand = [cand[i] for i in keep]
        pairs += [ImagePair(o, s, pid, f"{Path(o).stem}+{Path(s).stem}") for o, s in cand]
    if not pairs:
        raise DataError(f"no identity in '{base / TRAIN_DIR}' has both optical and SAR images",
                        "paired training needs ids with both modalities")
    return pairs


def _locate(root: Path, name: str) -> tuple[Path, str] | None:
    for d in _SYN_DIRS:
        p = root / d / name
        if p.is_file():
            return p, d
    return None


def synthetic_pose_pairs(root: str | Path, split: Literal["train", "test", "all"] = "train") -> list[ImagePair]:
    """Same-pose pairs from a generated set's ``pairs.csv``.

    Args:
        root: the generated dataset folder (with ``pairs.csv``).
        split: ``train`` (pairs in ``bounding_box_train``), ``test`` (pairs of held-out test ids, in
            ``query`` / ``bounding_box_test``) or ``all``.

    Raises:
        DataError: no ``pairs.csv``, a listed file is missing, or the split has no pairs.
    """
    r = Path(root)
    csv_path = r / PAIRS_CSV
    if not csv_path.is_file():
        raise DataError(f"'{r}' has no {PAIRS_CSV}", "generate the set with paired poses, or use data.format=hoss")
    with csv_path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"optical", "sar"} <= set(rows[0]):
        raise DataError(f"'{csv_path}' needs columns optical and sar", "regenerate the synthetic set")
    pairs = []
    for row in rows:
        o, s = _locate(r, row["optical"]), _locate(r, row["sar"])
        if o is None or s is None:
            missing = row["optical"] if o is None else row["sar"]
            raise DataError(f"'{missing}' listed in '{csv_path}' is missing", "regenerate the synthetic set")
        in_train = o[1] == "bounding_box_train"
        if split == "all" or (split == "train") == in_train:
            pid = int(row.get("pid") or -1)
            pairs.append(ImagePair(str(o[0]), str(s[0]), pid, f"{Path(row['optical']).stem}+{Path(row['sar']).stem}"))
    if not pairs:
        raise DataError(f"'{csv_path}' lists no {split} pairs", "generate more identities or another split")
    return pairs


_MODALITY_TOKENS = {"rgb", "sar", "opt", "optical", "eo"}


def _pair_key(stem: str) -> str:
    head, sep, tail = stem.rpartition("_")
    if sep and head and tail.lower() in _MODALITY_TOKENS:
        return head
    return stem


def folder_pairs(root: str | Path) -> list[ImagePair]:
    """Pairs from ``root/opt`` (or ``root/optical``) and ``root/sar`` matched by file name.

    Raises:
        DataError: missing folders, duplicate names, or no matching names.
    """
    r = Path(root)
    opt_dir, sar_dir = _find_folder(r, ("opt", "optical")), r / "sar"
    if opt_dir is None or not sar_dir.is_dir():
        raise DataError(f"'{r}' needs the folders opt/ and sar/", "put paired images with matching names in them")

    def index(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            key = _pair_key(f.stem)
            if key in out:
                raise DataError(f"'{out[key].name}' and '{f.name}' in '{folder}' have the same name",
                                "keep one image per name")
            out[key] = f
        return out

    opts, sars = index(opt_dir), index(sar_dir)
    keys = sorted(set(opts) & set(sars))
    if not keys:
        raise DataError(f"no file name in '{opt_dir}' matches one in '{sar_dir}'",
                        "name pairs alike, e.g. opt/a.png and sar/a.tif")
    return [ImagePair(str(opts[k]), str(sars[k]), -1, k) for k in keys]


def load_pairs(
    cfg: PairDataConfig, seed: int = 0, split: Literal["train", "test", "all"] = "train"
) -> tuple[list[ImagePair], str]:
    """The pairs a config names, and the format actually used.

    Raises:
        ConfigError: ``data.root`` is empty.
        DataError: see the readers.
    """
    if not cfg.root:
        raise ConfigError("data.root is empty", "pass --data DIR (a HOSS folder, a synthetic set or opt/ + sar/)")
    if not Path(cfg.root).is_dir():
        raise DataError(f"data folder '{cfg.root}' not found", "pass an existing folder to --data")
    fmt = detect_pair_format(cfg.root) if cfg.format == "auto" else cfg.format
    if fmt == "synthetic":
        return synthetic_pose_pairs(cfg.root, split), fmt
    if fmt == "folder":
        return folder_pairs(cfg.root), fmt
    return hoss_identity_pairs(cfg.root, cfg.max_pairs_per_id, seed), fmt


def split_pairs(pairs: Sequence[ImagePair], fraction: float, seed: int = 0) -> tuple[list[ImagePair], list[ImagePair]]:
    """Hold out a seeded ``fraction`` of identities (of pairs, for pid -1) for validation.

    At least one group is held out when ``fraction > 0`` and at least one stays for training;
    with fewer than two groups nothing is held out.
    """
    if fraction <= 0:
        return list(pairs), []
    groups = sorted({p.pid if p.pid >= 0 else f"pair:{i}" for i, p in enumerate(pairs)}, key=str)
    if len(groups) < 2:
        return list(pairs), []
    n_val = min(max(int(round(fraction * len(groups))), 1), len(groups) - 1)
    rng = np.random.default_rng(seed)
    val_groups = {groups[i] for i in rng.choice(len(groups), size=n_val, replace=False).tolist()}
    train, val = [], []
    for i, p in enumerate(pairs):
        key = p.pid if p.pid >= 0 else f"pair:{i}"
        (val if key in val_groups else train).append(p)
    return train, val


# --------------------------------------------------------------------------------------------
# images and the dataset
# --------------------------------------------------------------------------------------------


def resize_uint8(img: np.ndarray, resolution: Sequence[int]) -> np.ndarray:
    """Bicubic resize of a uint8 ``(H, W, 3)`` image to ``(height, width) = resolution``."""
    from PIL import Image

    h, w = int(resolution[0]), int(resolution[1])
    if img.shape[0] == h and img.shape[1] == w:
        return np.ascontiguousarray(img)
    return np.array(Image.fromarray(img).resize((w, h), Image.BICUBIC))


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


def read_prepared(
    path: str | Path, modality: str, spec: PreprocessSpec, resolution: Sequence[int] | None = None
) -> np.ndarray:
    """Read an image file and :func:`prepare_uint8` it."""
    return prepare_uint8(read_image(path), modality, spec, resolution)


class PairDataset(Dataset):
    """Optical/SAR pairs as tensors in [-1, 1] with identical random flips for both images.

    Items: ``{"optical": (3, H, W), "sar": (3, H, W), "index": int}``.

    Args:
        pairs: the pairs.
        spec: preprocessing (SAR conversion).
        resolution: (H, W) of the model.
        hflip, vflip: probabilities of a horizontal / vertical flip (same for both images).
        cache: keep the decoded, resized uint8 images in memory.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
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
        self._cache: dict[tuple[str, str], np.ndarray] = {}  # per image: pairs share images

    def __len__(self) -> int:
        return len(self.pairs)

    def _image(self, path: str, modality: str) -> np.ndarray:
        key = (path, modality)
        img = self._cache.get(key)
        if img is None:
            img = read_prepared(path, modality, self.spec, self.resolution)
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


def pairs_summary(pairs: Sequence[ImagePair]) -> dict[str, Any]:
    """Counts for logs and metrics files."""
    return {"pairs": len(pairs), "ids": len({p.pid for p in pairs if p.pid >= 0}),
            "optical_images": len({p.optical for p in pairs}), "sar_images": len({p.sar for p in pairs})}

