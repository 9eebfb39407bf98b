"""Reference index of a georeferenced optical map (``sarbridge index build --map``), built by streaming.

:func:`build_map_index` lays the grid the model was trained with over a lazily-opened map
(:class:`~sarbridge.data.map_source.MapSource`: a GeoTIFF / COG, a VRT or a folder of tiles), reads
and preprocesses the cells' windows in DataLoader workers while the encoder embeds the previous
batch, and saves an :class:`~sarbridge.retrieval.index.EmbeddingIndex` (vectors, per-patch metadata
with map and lon/lat coordinates, checksums) plus a copy of the model bundle, so an index folder is
self-contained. Memory holds a few batches of windows, never the map.

**Cells without data.** A cell whose window holds no valid pixel (the map's no-data value, alpha or
mask, gaps between tiles, NaN) is skipped; the index info records ``grid_cells`` and
``skipped_nodata``. Item ``id`` is the position in the index (as before); ``cell`` is the grid
cell. A map with no valid pixel at all is an error.

**Chunks, resume.** The cells are cut into chunks of ``chunk_size`` (row-major order). Every
finished chunk is committed atomically to ``OUT/.build/chunk_NNNNNN.npz`` (kept cell ids + vectors),
next to ``OUT/.build/build.json``, which names the map (geometry, files' sizes and heads), the model
(SHA-256) and the grid. ``resume=True`` skips the committed chunks and refuses a build folder made
with another map, model or grid. When all chunks exist they are merged in order into the index, the
index is saved (atomically, file by file; an existing index in ``OUT`` is only replaced at this
point, so a failed build loses nothing) and ``.build`` is removed. Embeddings are computed batch by
batch inside each chunk, so a resumed or distributed build gives the same vectors as one pass.

**Distributed.** Under ``torchrun`` each rank embeds chunks ``rank, rank + world, ...``; after a
barrier rank 0 merges them (same order, same vectors as one process).

``OUT/build.json`` / ``OUT/build.md`` report the build (cells, patches, skipped, chunks resumed,
processes, workers, seconds, patches/s, search settings).

Test-only: the environment variable ``SARBRIDGE_TEST_BUILD_PAUSE`` (seconds) makes the build sleep
after each committed chunk, so a test can kill it between chunks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sarbridge.core.distributed import barrier, broadcast_object, init_distributed
from sarbridge.core.errors import ConfigError, DataError, SarbridgeError
from sarbridge.core.progress import progress_bar
from sarbridge.core.utils import atomic_write, atomic_write_json, atomic_write_text, file_digest
from sarbridge.data.georaster import GeoRaster
from sarbridge.data.map_source import MapSource, open_map
from sarbridge.data.records import OPTICAL
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.retrieval import index as index_pkg
from sarbridge.retrieval.index import EmbeddingIndex
from sarbridge.tasks.geo.bundle import load_geo_model
from sarbridge.tasks.geo.datasets import MODALITY_INDEX, prepare_patch
from sarbridge.tasks.geo.grid import MapGrid, image_layout, make_grid, validate_optical
from sarbridge.tasks.geo.locate import MODEL_FILE

CHUNK_SIZE = 4096
BUILD_DIR = ".build"
BUILD_FORMAT = 1
PAUSE_ENV = "SARBRIDGE_TEST_BUILD_PAUSE"
TUNE_SAMPLE = 1000


@dataclass
class MapIndexBuild:
    """What a build did (``OUT/build.json``).

    Attributes:
        path: the index folder.
        cells: grid cells over the map.
        patches: cells indexed (with valid pixels).
        skipped: cells skipped as no-data.
        chunks: chunks of the build; ``resumed_chunks`` of them were committed by an earlier run.
        processes: ranks that embedded; ``workers``: DataLoader workers per rank.
        seconds: wall time of this run (embedding + merge); ``embedded``: cells read in this run.
        search: the approximate-search settings chosen by ``target_recall`` (None without it).
    """

    path: Path
    cells: int
    patches: int
    skipped: int
    chunks: int
    resumed_chunks: int
    processes: int
    workers: int
    seconds: float
    embedded: int
    search: dict[str, Any] | None = field(default=None)

    @property
    def patches_per_s(self) -> float:
        """Cells read and embedded per second in this run."""
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


class CellWindows(Dataset):
    """The grid cells of a lazily-read map as preprocessed tensors (``None`` for a no-data cell)."""

    def __init__(self, source: MapSource, grid: MapGrid, spec: PreprocessSpec) -> None:
        self.source, self.spec = source, spec
        self.boxes = np.array([c.box for c in grid.cells], dtype=np.int64).reshape(-1, 4)
        self.rowcol = np.array([(c.row, c.col) for c in grid.cells], dtype=np.int64).reshape(-1, 2)
        self.name = Path(source.path).name

    def __len__(self) -> int:
        return len(self.boxes)

    def source_name(self, i: int) -> str:
        """``map.tif[rR,cC]``: the patch's name in messages and metadata."""
        return f"{self.name}[r{self.rowcol[i, 0]},c{self.rowcol[i, 1]}]"

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        c0, r0, c1, r1 = (int(v) for v in self.boxes[i])
        pixels, valid = self.source.read_valid(c0, r0, c1 - c0, r1 - r0)
        if valid is not None and not valid.any():
            return i, None
        return i, prepare_patch(image_layout(pixels, "raw"), OPTICAL, self.spec, self.source_name(i))


def collate_cells(items: list[tuple[int, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(cell ids, kept cell ids, stacked tensors of the kept cells)`` of a batch."""
    ids = torch.tensor([i for i, _ in items], dtype=torch.long)
    kept = [(i, t) for i, t in items if t is not None]
    x = torch.stack([t for _, t in kept]) if kept else torch.zeros(0)
    return ids, torch.tensor([i for i, _ in kept], dtype=torch.long), x


def default_workers() -> int:
    """``min(4, cpus - 1)`` DataLoader workers (0 on a single CPU)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _chunk_path(build: Path, c: int) -> Path:
    return build / f"chunk_{c:06d}.npz"


def _save_chunk(path: Path, ids: np.ndarray, vectors: np.ndarray, cells: int) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids.astype(np.int64), vectors=vectors.astype(np.float32), cells=np.int64(cells))

    atomic_write(path, write)


def _load_chunk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as z:
            return z["ids"], z["vectors"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"build chunk '{path}' is damaged ({str(exc)[:60]})",
                        "delete it and run again with --resume (it is rebuilt)") from None


def _check_out(out: Path, overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume were both given", "pass --resume to continue or --overwrite to restart")
    if resume:
        return
    if (out / BUILD_DIR / "build.json").exists() and not overwrite:
        raise SarbridgeError(f"'{out}' holds an interrupted index build ({out / BUILD_DIR})",
                             "pass --resume to continue it or --overwrite to start again")
    if (out / "manifest.json").exists() and not overwrite:
        raise SarbridgeError(f"'{out}' already holds an index", "pass --overwrite or choose another --out")


def _check_resume(build: Path, want: dict[str, Any]) -> None:
    """Refuse to resume a build folder made for another map, model or grid."""
    manifest = build / "build.json"
    if not manifest.is_file():
        return
    try:
        have = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise DataError(f"build manifest '{manifest}' is unreadable", "pass --overwrite to start the build again") from None
    names = {"map": "map (--map)", "model_sha256": "model (--model)", "grid": "grid (--patch-size/--stride)",
             "chunk_size": "chunk size (--chunk-size)", "format": "build format"}
    for key, what in names.items():
        if have.get(key) != want.get(key):
            raise DataError(f"cannot resume '{build.parent}': it was started with another {what}",
                            "pass the same --map/--model/--patch-size/--stride/--chunk-size, or --overwrite to restart")


def _tuner() -> Any:
    """``sarbridge.retrieval.index.tune_search`` when this version has it, else None."""
    return getattr(index_pkg, "tune_search", None)


def build_map_index(map_path: str | Path, model_path: str | Path, out_dir: str | Path, patch_size: int | None = None,
                    stride: int | None = None, device: str = "auto", overwrite: bool = False, resume: bool = False,
                    workers: int | None = None, chunk_size: int = CHUNK_SIZE, target_recall: float | None = None,
                    progress: bool = True) -> MapIndexBuild:
    """Grid a map into reference patches, embed them (streaming, resumable, distributed) and save an index.

    Args:
        map_path: optical GeoTIFF / COG with a CRS (or image + world file + .prj), a ``.vrt``, or a
            folder of GeoTIFF tiles (one CRS and resolution).
        model_path: ``geo_model.pt`` from ``sarbridge geo train``.
        out_dir: index folder (created).
        patch_size: grid cell in map pixels (default: the model's ``data.patch_size``).
        stride: grid step (default: the patch size, non-overlapping as in CMPC).
        device: ``auto``, ``cpu`` or ``cuda`` (under ``torchrun`` each rank takes its local GPU).
        overwrite: start over in an ``out_dir`` that holds an index or an interrupted build (the old
            index stays until the new one is saved).
        resume: continue the interrupted build in ``out_dir`` (a finished index is returned as is).
        workers: DataLoader workers reading windows (default :func:`default_workers`).
        chunk_size: cells per committed chunk.
        target_recall: tune the approximate search on a sample of the map's own patches to reach
            this recall@10 (needs ``sarbridge.retrieval.index.tune_search``); settings saved in the
            index info under ``search``.
        progress: show a progress bar (rank 0) with patches/s and the ETA.

    Returns:
        The :class:`MapIndexBuild` (the same on every rank).

    Raises:
        SarbridgeError: ``out_dir`` holds an index or a build and neither flag was given.
        DataError: unreadable map / model, a build folder of another map / model / grid, a map with
            no valid pixel.
        ConfigError: bad ``chunk_size`` / ``workers`` / ``target_recall``.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    build = out / BUILD_DIR
    if int(chunk_size) < 1:
        raise ConfigError(f"chunk size {chunk_size} is not positive", "pass --chunk-size 1 or more")
    if workers is not None and int(workers) < 0:
        raise ConfigError(f"--workers {workers} is negative", "pass 0 (read in the main process) or more")
    if target_recall is not None:
        if not 0.0 < float(target_recall) <= 1.0:
            raise ConfigError(f"--target-recall {target_recall} is outside (0, 1]", "pass e.g. 0.95")
        if _tuner() is None:
            raise ConfigError("--target-recall needs sarbridge.retrieval.index.tune_search, which this version lacks",
                              "drop --target-recall (the index is searched exactly)")
    _check_out(out, overwrite, resume)
    if resume and (out / "manifest.json").is_file() and not build.exists():
        return _finished(out)
    ctx = init_distributed(device)
    model = load_geo_model(model_path)
    source = open_map(map_path)
    validate_optical(cast(GeoRaster, source))
    grid = make_grid(cast(GeoRaster, source), patch_size or model.cfg.data.patch_size, stride)
    n_cells, size = len(grid.cells), int(chunk_size)
    n_chunks = math.ceil(n_cells / size)
    want = {"format": BUILD_FORMAT, "map": source.fingerprint(), "model_sha256": file_digest(model_path),
            "grid": {"patch_size": grid.patch_size, "stride": grid.stride, "cells": n_cells}, "chunk_size": size}
    if resume:
        _check_resume(build, want)
    done_before: list[int] = []
    if ctx.is_main:
        if overwrite and build.exists():
            shutil.rmtree(build)
        build.mkdir(parents=True, exist_ok=True)
        if not (build / "build.json").is_file():
            atomic_write_json(build / "build.json", want)
        done_before = [c for c in range(n_chunks) if _chunk_path(build, c).is_file()]
    barrier(ctx)
    n_workers = default_workers() if workers is None else int(workers)
    mine = [c for c in range(ctx.rank, n_chunks, ctx.world_size) if not _chunk_path(build, c).is_file()]
    _embed_chunks(source, grid, model, mine, size, build, ctx.device, n_workers, progress and ctx.is_main)
    barrier(ctx)
    result: Any = None
    if ctx.is_main:
        try:
            result = ("ok", *_merge(source, grid, model.path, build, out, n_chunks, target_recall))
        except SarbridgeError as exc:  # every rank raises the same one line
            result = ("error", type(exc), exc.message, exc.hint)
    result = broadcast_object(result, ctx=ctx)
    if result[0] == "error":
        raise result[1](result[2], result[3])
    _, patches, search = result
    embedded = n_cells - sum(min(size, n_cells - c * size) for c in done_before)
    stats = MapIndexBuild(out, n_cells, patches, n_cells - patches, n_chunks, len(done_before), ctx.world_size,
                          n_workers, time.perf_counter() - start, embedded, search)
    if ctx.is_main:
        _write_report(stats)
    barrier(ctx)
    return stats


def _finished(out: Path) -> MapIndexBuild:
    """The report of an index that is already complete (``--resume`` after the end)."""
    report = out / "build.json"
    facts = json.loads(report.read_text()) if report.is_file() else {}
    n = int(facts.get("patches", 0))
    return MapIndexBuild(out, int(facts.get("cells", n)), n, int(facts.get("skipped", 0)), int(facts.get("chunks", 0)),
                         int(facts.get("chunks", 0)), 1, 0, 0.0, 0, facts.get("search"))


def _embed_chunks(source: MapSource, grid: MapGrid, model: Any, chunks: list[int], size: int, build: Path,
                  device: torch.device, workers: int, progress: bool) -> None:
    """Embed the cells of ``chunks`` (batch by batch inside each chunk) and commit each chunk."""
    if not chunks:
        return
    n = len(grid.cells)
    bs = int(model.cfg.eval.batch_size)
    batches: list[list[int]] = []
    for c in chunks:
        lo, hi = c * size, min((c + 1) * size, n)
        batches.extend(list(range(s, min(s + bs, hi))) for s in range(lo, hi, bs))
    data = CellWindows(source, grid, model.spec)
    loader = DataLoader(data, batch_sampler=batches, num_workers=workers, collate_fn=collate_cells,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers > 0 else None)
    encoder = model.encoder.to(device).eval()
    modality = MODALITY_INDEX[OPTICAL]
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    total = sum(min((c + 1) * size, n) - c * size for c in chunks)
    bar = progress_bar(total=total, desc="embedding map patches", unit="patch", disable=not progress, dynamic_ncols=True)
    ids_acc: list[np.ndarray] = []
    vec_acc: list[np.ndarray] = []
    seen, current = 0, chunks[0]
    with torch.no_grad():
        for ids, kept, x in loader:
            if len(kept):
                m = torch.full((len(kept),), modality, dtype=torch.long, device=device)
                emb = encoder.embed(x.to(device, non_blocking=True), m).float().cpu().numpy()
                ids_acc.append(kept.numpy())
                vec_acc.append(emb)
            seen += len(ids)
            bar.update(len(ids))
            if seen == min((current + 1) * size, n) - current * size:
                dim = int(getattr(encoder, "dim", 0)) or (vec_acc[0].shape[1] if vec_acc else 1)
                vec = np.concatenate(vec_acc) if vec_acc else np.zeros((0, dim), np.float32)
                kept_ids = np.concatenate(ids_acc) if ids_acc else np.zeros(0, np.int64)
                _save_chunk(_chunk_path(build, current), kept_ids, vec, seen)
                ids_acc, vec_acc, seen = [], [], 0
                nxt = chunks.index(current) + 1
                current = chunks[nxt] if nxt < len(chunks) else -1
                if pause > 0:
                    time.sleep(pause)
    bar.close()
    source.close()


def _merge(source: MapSource, grid: MapGrid, model_path: Path, build: Path, out: Path, n_chunks: int,
           target_recall: float | None) -> tuple[int, dict[str, Any] | None]:
    """Join the chunks in order into the index, save it (with the model copy) and remove ``.build``."""
    parts = [_load_chunk(_chunk_path(build, c)) for c in range(n_chunks)]
    ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
    if len(ids) == 0:
        shutil.rmtree(build, ignore_errors=True)
        raise DataError(f"map {source.name} has no valid pixels (all {len(grid.cells)} grid cells are no-data)",
                        "check the map's no-data value / mask, or index a map that has data")
    vectors = np.concatenate([p[1] for p in parts]).astype(np.float32)
    centers, lonlat, foot = grid.centers(), grid.lonlat(), grid.footprints()
    name = Path(source.path).name
    meta = []
    for pos, i in enumerate(ids.tolist()):
        cell = grid.cells[i]
        meta.append({"id": pos, "cell": i, "row": cell.row, "col": cell.col, "x": float(centers[i, 0]),
                     "y": float(centers[i, 1]), "lon": float(lonlat[i, 0]), "lat": float(lonlat[i, 1]),
                     "footprint": [float(v) for v in foot[i]], "source": f"{name}[r{cell.row},c{cell.col}]",
                     "modality": OPTICAL})
    index = EmbeddingIndex(int(vectors.shape[1]))
    index.add(vectors, meta)
    search = None
    if target_recall is not None:
        rng = np.random.default_rng(0)
        take = min(len(ids), max(TUNE_SAMPLE, len(ids) // 100))
        sample = vectors[np.sort(rng.choice(len(ids), size=take, replace=False))]
        search = dict(_tuner()(index, sample, float(target_recall), k=10))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MODEL_FILE, lambda tmp: shutil.copyfile(model_path, tmp))
    f0 = foot[0]
    side = float(max(f0[2] - f0[0], f0[3] - f0[1]))
    info: dict[str, Any] = {"kind": "geo", "map": str(Path(source.path).resolve()), "crs": source.crs,
                            "bounds": list(source.bounds), "patch_size": grid.patch_size, "stride": grid.stride,
                            "patch_size_m": side, "gsd": list(source.gsd), "bands": source.bands,
                            "model_sha256": file_digest(out / MODEL_FILE), "map_kind": source.kind,
                            "grid_cells": len(grid.cells), "skipped_nodata": len(grid.cells) - len(ids)}
    if search is not None:
        info["search"] = search
    index.save(out, info=info)
    shutil.rmtree(build, ignore_errors=True)
    return len(ids), search


def _write_report(stats: MapIndexBuild) -> None:
    facts = {k: v for k, v in asdict(stats).items() if k != "path"}
    facts["patches_per_s"] = round(stats.patches_per_s, 2)
    facts["seconds"] = round(stats.seconds, 3)
    atomic_write_json(stats.path / "build.json", facts)
    rows = "\n".join(f"| {k} | {json.dumps(v) if isinstance(v, dict) else v} |" for k, v in facts.items())
    atomic_write_text(stats.path / "build.md", f"# Map index build\n\n| | |\n|---|---|\n{rows}\n")


def build_geo_index(map_path: str | Path, model_path: str | Path, out_dir: str | Path, patch_size: int | None = None,
                    stride: int | None = None, device: str = "auto", overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Grid a map into reference patches, embed them and save a searchable index (see :func:`build_map_index`).

    Args:
        map_path: optical GeoTIFF with a CRS (or image + world file + .prj), a ``.vrt`` or a folder of tiles.
        model_path: ``geo_model.pt`` from ``sarbridge geo train``.
        out_dir: index folder (created).
        patch_size: grid cell in map pixels (default: the model's ``data.patch_size``).
        stride: grid step (default: the patch size, non-overlapping as in CMPC).
        device: ``auto``, ``cpu`` or ``cuda``.
        overwrite: replace an existing index in ``out_dir``.
        progress: show a progress bar.

    Returns:
        The index folder.
    """
    return build_map_index(map_path, model_path, out_dir, patch_size=patch_size, stride=stride, device=device,
                           overwrite=overwrite, progress=progress).path
