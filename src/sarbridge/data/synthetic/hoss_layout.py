"""Writing a synthetic optical/SAR ship ReID dataset to disk in the HOSS layout."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.core.progress import progress_bar
from sarbridge.core.resources import check_disk, check_memory
from sarbridge.data.synthetic.optical import render_optical
from sarbridge.data.synthetic.pose import sample_pose
from sarbridge.data.synthetic.sar import render_sar
from sarbridge.data.synthetic.ships import sample_ship
from sarbridge.data.synthetic.spec import ShipSpec, _jsonable

__all__ = ["GENERATOR_VERSION", "SyntheticArgumentError", "SyntheticTargetError", "generate_hoss_dataset", "generated_by"]

GENERATOR_VERSION = "1.0.0"
GENERATOR_NAME = "sarbridge.data.synthetic"


# conservative sizes for the up-front checks: a chip on disk (an RGB chip is ~20-60 KB, a float32 SAR
# chip ~40-120 KB) and the per-image bookkeeping held in memory while the set is written
_DISK_BYTES_PER_IMAGE = 48 * 1024
_INDEX_BYTES_PER_IMAGE = 1024


class SyntheticArgumentError(ConfigError, ValueError):
    """An invalid generator argument (also a :class:`ValueError`)."""


class SyntheticTargetError(DataError, FileExistsError):
    """The output folder holds images the generator did not write (also a :class:`FileExistsError`)."""


_SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test",
               "subset/O2S/query", "subset/O2S/bounding_box_test",
               "subset/S2O/query", "subset/S2O/bounding_box_test")
_STREAM_SPEC, _STREAM_POSE, _STREAM_OPT, _STREAM_SAR, _STREAM_SPLIT = 1, 2, 3, 4, 5
_STREAM_DISTRACTOR = 6


def generated_by(root: Path, generator: str) -> bool:
    """Whether ``root/meta.json`` says ``generator`` wrote the folder (unreadable or missing: no)."""
    meta = root / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("generator") == generator
    except (OSError, ValueError):
        return False

def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)))


def _tiff_bytes(arr: np.ndarray) -> bytes:

    buf = io.BytesIO()
    if arr.ndim == 3:
        tifffile.imwrite(buf, arr, photometric="rgb", metadata=None)
    else:
        tifffile.imwrite(buf, arr, photometric="minisblack", metadata=None)
    return buf.getvalue()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _query_counts(n_opt: int, n_sar: int) -> tuple[int, int]:
    """How many optical / SAR images of a test id go to query so every query keeps a
    cross-modal gallery match."""
    if n_opt >= 2 and n_sar >= 2:
        return 1, 1
    if n_opt >= n_sar:
        return 1, 0  # the SAR image(s) stay in the gallery
    return 0, 1


def _shares_pose(train: bool, k: int, n_pair: int, q_opt: int, q_sar: int) -> bool:
    """Whether optical image k and SAR image k of an id are rendered from one pose."""
    return k < n_pair and (train or (k < q_opt) == (k < q_sar))


def _check_target(root: Path, planned: set[str]) -> list[Path]:
    """Stale images from an earlier generator run to remove; refuse to touch foreign data."""
    existing = [p for d in _SPLIT_DIRS if (root / d).is_dir() for p in (root / d).iterdir()
                if p.is_file() and (p.suffix.lower() in (".tif", ".tiff") or p.name.endswith(".tif.tmp"))]
    stale = [p for p in existing if p.relative_to(root).as_posix() not in planned]
    if not stale:
        return []
    ours = generated_by(root, GENERATOR_NAME)
    if not ours and any(not p.name.endswith(".tmp") for p in stale):
        raise SyntheticTargetError(
            f"'{root}' already holds {len(stale)} images this run would not write (e.g. '{stale[0].name}') "
            "and no synthetic meta.json",
            "choose an empty or new output folder",
        )
    return stale


def generate_hoss_dataset(
    root: str | Path,
    num_ids: int = 100,
    optical_per_id: int = 2,
    sar_per_id: int = 2,
    train_fraction: float = 0.5,
    num_distractors: int = 10,
    seed: int = 0,
    looks: float | None = 4,
    gsd_optical: float = 0.75,
    gsd_sar: float = 1.0,
    subsets: bool = True,
    progress: bool = True,
    heading_jitter_deg: float = 4.0,
    paired_poses: bool = True,
) -> Path:
    """Write a synthetic optical/SAR ship ReID dataset in the HOSS layout.

    Layout under ``root``: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``, and with
    ``subsets`` ``subset/O2S/{query,bounding_box_test}`` (optical queries vs SAR gallery) and
    ``subset/S2O/{query,bounding_box_test}`` (SAR queries vs optical gallery); plus
    ``meta.json`` (version, seed, parameters, GSDs, per-identity specs and per-file pose and
    render summary) and, with ``paired_poses``, ``pairs.csv`` listing same-pose optical/SAR pairs.

    Names: ``{pid:04d}_s{SS}c1_RGB.tif`` / ``{pid:04d}_s{SS}c2_SAR.tif`` with ``SS`` the 1-based
    image index within the modality; distractors ``-1_{NNNN}_{RGB|SAR}.tif``. RGB is uint8
    ``(H, W, 3)`` (photometric rgb), SAR float32 ``(H, W)`` (minisblack). Every file is written
    to ``name.tmp`` and renamed, so an interrupted run leaves no partial TIFF; rerunning
    completes it. Rerunning in a folder this generator wrote before (its ``meta.json``) removes
    the images the new run does not write; a folder holding other images is refused.

    Split: a seeded ``train_fraction`` of the ids (at least one train and one test id when
    ``0 < train_fraction < 1`` and ``num_ids >= 2``) put all their images in
    ``bounding_box_train``. Each test id puts its first optical and first SAR image in ``query``
    (only one of them when a modality has a single image, so that every query keeps a gallery
    image of the other modality) and the rest in ``bounding_box_test``. Distractors (new ships,
    alternating SAR/RGB) go to the galleries. Subset queries are the ``query`` images of one
    modality; subset galleries the ``bounding_box_test`` images (distractors included) of the
    other modality. A protocol without queries gets no folders (readers then skip it).

    The output depends only on the arguments (per-image random streams derive from ``seed``
    and the image's identity and index), not on the order or the folder.

    Args:
        root: output folder (created).
        num_ids: number of ship identities (pids 1..num_ids).
        optical_per_id: optical images per identity (1-99).
        sar_per_id: SAR images per identity (1-99).
        train_fraction: fraction of identities used for training.
        num_distractors: gallery-only images of other ships (pid -1).
        seed: master seed.
        looks: SAR speckle looks (None for clean SAR).
        gsd_optical: metres per optical pixel.
        gsd_sar: metres per SAR pixel.
        subsets: also write the O2S and S2O protocols.
        progress: show progress (a bar on a terminal).
        heading_jitter_deg: per-image heading jitter.
        paired_poses: optical image k and SAR image k of an id share their pose (for k below
            ``min(optical_per_id, sar_per_id)``, when both land in the same split: a query
            never shares its pose with a gallery image); listed in ``pairs.csv``.

    Returns:
        The dataset root.

    Raises:
        SyntheticArgumentError: invalid counts, fractions or GSDs (a ``ValueError``).
        SyntheticTargetError: ``root`` holds other images that this run would not write (a
            ``FileExistsError``).
    """
    if num_ids < 1:
        raise SyntheticArgumentError(f"num_ids must be >= 1, got {num_ids}")
    if not (1 <= optical_per_id <= 99 and 1 <= sar_per_id <= 99):
        raise SyntheticArgumentError("optical_per_id and sar_per_id must be between 1 and 99")
    if not 0.0 <= train_fraction <= 1.0:
        raise SyntheticArgumentError(f"train_fraction must be in [0, 1], got {train_fraction}")
    if num_distractors < 0 or num_distractors > 9999:
        raise SyntheticArgumentError(f"num_distractors must be in [0, 9999], got {num_distractors}")
    if gsd_optical <= 0 or gsd_sar <= 0:
        raise SyntheticArgumentError("gsd_optical and gsd_sar must be positive")
    if looks is not None and looks < 0:
        raise SyntheticArgumentError(f"looks must be positive, 0 or None (no speckle), got {looks}")
    root = Path(root)
    images = num_ids * (optical_per_id + sar_per_id) + num_distractors
    check_memory(images * _INDEX_BYTES_PER_IMAGE, f"a set of {num_ids:,} identities",
                 "generate fewer identities (--ids)")
    check_disk(root, images * _DISK_BYTES_PER_IMAGE, f"a set of {num_ids:,} identities ({images:,} chips)",
               "generate fewer identities (--ids) or write to a larger disk")

    pids = np.arange(1, num_ids + 1)
    n_train = int(round(num_ids * train_fraction))
    if 0.0 < train_fraction < 1.0 and num_ids >= 2:
        n_train = min(max(n_train, 1), num_ids - 1)
    perm = _rng(seed, _STREAM_SPLIT).permutation(pids)
    train_ids = set(int(p) for p in perm[:n_train])
    q_opt, q_sar = _query_counts(optical_per_id, sar_per_id)
    n_pair = min(optical_per_id, sar_per_id) if paired_poses else 0

    # --- plan: (relative dirs, file name, job) ---------------------------------------------
    jobs: list[dict[str, Any]] = []
    for pid in (int(p) for p in pids):
        for mod, count, cam, nq in (("RGB", optical_per_id, 1, q_opt), ("SAR", sar_per_id, 2, q_sar)):
            for k in range(count):
                name = f"{pid:04d}_s{k + 1:02d}c{cam}_{mod}.tif"
                if pid in train_ids:
                    dirs = ["bounding_box_train"]
                elif k < nq:
                    dirs = ["query"] + ([f"subset/{'O2S' if mod == 'RGB' else 'S2O'}/query"] if subsets else [])
                else:
                    dirs = ["bounding_box_test"] + ([f"subset/{'S2O' if mod == 'RGB' else 'O2S'}/bounding_box_test"]
                                                    if subsets else [])
                jobs.append({"pid": pid, "modality": mod, "index": k, "name": name, "dirs": dirs})
    for j in range(num_distractors):
        mod = "SAR" if j % 2 == 0 else "RGB"
        sub = "O2S" if mod == "SAR" else "S2O"
        dirs = ["bounding_box_test"] + ([f"subset/{sub}/bounding_box_test"] if subsets else [])
        jobs.append({"pid": -1, "modality": mod, "index": j, "name": f"-1_{j + 1:04d}_{mod}.tif", "dirs": dirs})

    planned = {f"{d}/{job['name']}" for job in jobs for d in job["dirs"]}
    stale = _check_target(root, planned)
    # folders are made on first use: a protocol without queries gets no folder, so readers skip it
    for d in sorted({d for job in jobs for d in job["dirs"]}):
        (root / d).mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.unlink()

    specs: dict[int, ShipSpec] = {}
    files: dict[str, Any] = {}
    pairs: list[tuple[str, str, int]] = []
    bar = None
    if progress:
        bar = progress_bar(total=len(jobs), desc="synthetic HOSS", unit="img")
    try:
        for job in jobs:
            pid, mod, k = job["pid"], job["modality"], job["index"]
            if pid > 0:
                if pid not in specs:
                    specs[pid] = sample_ship(_rng(seed, _STREAM_SPEC, pid))
                spec = specs[pid]
                shared = _shares_pose(pid in train_ids, k, n_pair, q_opt, q_sar)
                pose_key: tuple[int, ...] = (_STREAM_POSE, pid, k, 0 if shared else (1 if mod == "RGB" else 2))
                img_rng = _rng(seed, _STREAM_OPT if mod == "RGB" else _STREAM_SAR, pid, k)
            else:
                spec = sample_ship(_rng(seed, _STREAM_DISTRACTOR, k, 0))
                pose_key = (_STREAM_DISTRACTOR, k, 1)
                img_rng = _rng(seed, _STREAM_DISTRACTOR, k, 2)
            pose = sample_pose(spec, _rng(seed, *pose_key), heading_jitter_deg)
            if mod == "RGB":
                arr = render_optical(spec, img_rng, gsd_m=gsd_optical, pose=pose)
            else:
                arr = render_sar(spec, img_rng, gsd_m=gsd_sar, looks=looks, pose=pose)
            data = _tiff_bytes(arr)
            for d in job["dirs"]:
                _atomic_write_bytes(root / d / job["name"], data)
            entry: dict[str, Any] = {
                "pid": pid, "modality": mod, "dirs": job["dirs"],
                "height": int(arr.shape[0]), "width": int(arr.shape[1]),
                "gsd_m": gsd_optical if mod == "RGB" else gsd_sar, "pose": pose.to_dict(),
            }
            if pid < 0:
                entry["spec"] = spec.summary()
            files[job["name"]] = entry
            if pid > 0 and mod == "SAR" and _shares_pose(pid in train_ids, k, n_pair, q_opt, q_sar):
                pairs.append((f"{pid:04d}_s{k + 1:02d}c1_RGB.tif", job["name"], pid))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    meta = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "params": {
            "num_ids": num_ids, "optical_per_id": optical_per_id, "sar_per_id": sar_per_id,
            "train_fraction": train_fraction, "num_distractors": num_distractors, "looks": looks,
            "gsd_optical": gsd_optical, "gsd_sar": gsd_sar, "subsets": subsets,
            "heading_jitter_deg": heading_jitter_deg, "paired_poses": paired_poses,
        },
        "gsd_m": {"RGB": gsd_optical, "SAR": gsd_sar},
        "cameras": {"c1": "RGB", "c2": "SAR"},
        "train_ids": sorted(train_ids),
        "test_ids": sorted(int(p) for p in pids if int(p) not in train_ids),
        "identities": {f"{pid:04d}": specs[pid].summary() for pid in sorted(specs)},
        "files": files,
    }
    if n_pair:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["optical", "sar", "pid", "gsd_optical", "gsd_sar"])
        for o, s, pair_pid in pairs:
            w.writerow([o, s, pair_pid, gsd_optical, gsd_sar])
        _atomic_write_bytes(root / "pairs.csv", buf.getvalue().encode("utf-8"))
    elif (root / "pairs.csv").is_file():
        (root / "pairs.csv").unlink()
    _atomic_write_bytes(root / "meta.json", (json.dumps(_jsonable(meta), indent=1) + "\n").encode("utf-8"))
    return root
