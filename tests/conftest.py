"""Shared fixtures: the embedded HOSS sample (read-only) and writers for tiny generated images."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

import sarbridge

HOSS_SAMPLE_PARENT = Path(sarbridge.__file__).resolve().parent / "resources" / "hoss-sample"
HOSS_SAMPLE_ROOT = HOSS_SAMPLE_PARENT / "HOSS"
HOSS_SAMPLE_MANIFEST = HOSS_SAMPLE_PARENT / "manifest.csv"


def write_rgb_tiff(path: Path, height: int = 12, width: int = 7, seed: int = 0, **kwargs) -> np.ndarray:
    """Write a random 8-bit RGB (H, W, 3) TIFF and return its pixels."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, photometric="rgb", **kwargs)
    return arr


def write_sar_tiff(path: Path, height: int = 12, width: int = 7, seed: int = 0, **kwargs) -> np.ndarray:
    """Write a random positive float32 (H, W) SAR TIFF and return its pixels."""
    rng = np.random.default_rng(seed)
    arr = (rng.gamma(1.0, 0.05, size=(height, width)) + 1e-4).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, photometric="minisblack", **kwargs)
    return arr


def write_chip(path: Path, seed: int = 0, height: int = 12, width: int = 7) -> np.ndarray:
    """Write an RGB or SAR chip depending on the HOSS modality token of ``path``."""
    if path.stem.upper().endswith("_SAR"):
        return write_sar_tiff(path, height, width, seed)
    return write_rgb_tiff(path, height, width, seed)


@pytest.fixture(scope="session")
def hoss_sample_root() -> Path:
    """The embedded real HOSS sample folder (``.../hoss-sample/HOSS``); never write into it."""
    if not (HOSS_SAMPLE_ROOT / "query").is_dir():
        pytest.skip("embedded HOSS sample is not installed")
    return HOSS_SAMPLE_ROOT


@pytest.fixture(scope="session")
def hoss_sample_manifest(hoss_sample_root: Path) -> list[dict[str, str]]:
    """Rows of ``hoss-sample/manifest.csv`` (split, file, pid, modality, camid, width, height ...)."""
    with HOSS_SAMPLE_MANIFEST.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def make_hoss_layout(tmp_path: Path) -> Callable[..., Path]:
    """Factory building a tiny HOSS-layout dataset under ``tmp_path``.

    ``make_hoss_layout({"bounding_box_train": [names], "query": [...], ...})`` writes one small
    chip per name (RGB or SAR by its suffix) and returns the dataset folder.
    """

    def make(folders: dict[str, list[str]], name: str = "HOSS") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        for i, (folder, files) in enumerate(folders.items()):
            (root / folder).mkdir(parents=True, exist_ok=True)
            for j, fname in enumerate(files):
                write_chip(root / folder / fname, seed=100 * i + j)
        return root

    return make


TINY_HOSS = {
    "bounding_box_train": [
        "0001_s01c1_RGB.tif", "0001_s01c2_SAR.tif",
        "0002_s01c1_RGB.tif", "0002_s01c2_SAR.tif",
        "0003_s01c1_RGB.tif",
    ],
    "query": ["0010_s01c1_RGB.tif", "0011_s01c2_SAR.tif"],
    "bounding_box_test": [
        "0010_s01c2_SAR.tif", "0011_s01c1_RGB.tif", "-1_0001_SAR.tif", "-1_0002_RGB.tif",
    ],
}


@pytest.fixture
def tiny_hoss(make_hoss_layout: Callable[..., Path]) -> Path:
    """A 11-image HOSS layout: train (3 ids), query (1 optical, 1 SAR), gallery (+2 distractors)."""
    return make_hoss_layout(TINY_HOSS)


@pytest.fixture
def write_rgb() -> Callable[..., np.ndarray]:
    """``write_rgb(path, height=12, width=7, seed=0, **tifffile_kwargs)`` -> the uint8 pixels written."""
    return write_rgb_tiff


@pytest.fixture
def write_sar() -> Callable[..., np.ndarray]:
    """``write_sar(path, height=12, width=7, seed=0, **tifffile_kwargs)`` -> the float32 pixels written."""
    return write_sar_tiff
