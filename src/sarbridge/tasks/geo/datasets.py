"""Torch datasets over :class:`~sarbridge.tasks.geo.patches.LocalisationData`: patch tensors and training pairs.

Reference patches are optical, queries SAR; both go through the checkpoint's
:class:`~sarbridge.data.transforms.PreprocessSpec` (SAR: ``max``/``percentile`` scaling and optional
despeckling; resize to ``image_size``), so training, evaluation and ``geo locate`` see the same inputs.

With a ``cache_dir`` a :class:`PatchImages` keeps its patches on disk instead of in memory: every
patch is prepared once to the uint8 ``(H, W, 3)`` image the network sees before ``ToTensor`` /
``Normalize`` (modality conversion, despeckling, bicubic resize to ``spec.image_size``) and stored
in one memory-mapped ``images.npy`` (:class:`GeoPatchCache`). Items are rebuilt from it by
``ToTensor`` + ``Normalize``, so they equal :func:`prepare_patch` exactly, and DataLoader workers
map the file themselves. The folder ``geo-<key>`` is named by :func:`patch_cache_key` (the
preprocessing, the modality, every patch's source string and loader window, and the size and
modification time of the files behind the loaders), is built by the one cache build path
(:func:`sarbridge.core.cache.build_once`: atomically, rebuilt when truncated; under ``torchrun``
rank 0 builds it and the others wait).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T

from sarbridge.core.cache import (
    IMAGES_NAME,
    INDEX_NAME,
    MemmapCacheFolder,
    build_once,
    map_with_progress,
)
from sarbridge.core.distributed import current_context, gather_rows, shard_range
from sarbridge.core.errors import DataError
from sarbridge.core.progress import progress_bar
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.geo.patches import GeoQuery, GeoReference, ImageLoader

if TYPE_CHECKING:
    from sarbridge.tasks.geo.model import GeoEmbeddingNet

MODALITY_INDEX = {OPTICAL: 0, SAR: 1}
GEO_CACHE_FORMAT_VERSION = 1
GEO_CACHE_INDEX, GEO_CACHE_IMAGES = INDEX_NAME, IMAGES_NAME


def prepare_patch(arr: np.ndarray, modality: str, spec: PreprocessSpec, source: str) -> torch.Tensor:
    """Raw patch pixels -> normalised ``(3, H, W)`` tensor, with a clear error naming ``source``."""
    arr = np.asarray(arr)
    if arr.size == 0 or min(arr.shape[:2]) < 2:
        raise DataError(f"patch {source} is empty ({arr.shape})", "check the map/strip coverage and the patch size")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"patch {source} holds NaN or infinite pixels", "fill or mask them in the source raster")
    if modality == SAR and arr.ndim == 3:
        arr = arr.mean(axis=-1)
    tensor, _ = spec.prepare(arr, modality)
    return tensor


def patch_uint8(arr: np.ndarray, modality: str, spec: PreprocessSpec, source: str) -> np.ndarray:
    """Raw patch pixels -> the uint8 ``(H, W, 3)`` network image before ``ToTensor``/``Normalize``.

    Same checks and conversion as :func:`prepare_patch` (modality rule, despeckling), then the
    PIL bicubic resize of ``spec.eval_transform()`` to ``spec.image_size``.

    Raises:
        DataError: an empty patch or non-finite pixels (naming ``source``).
    """
    arr = np.asarray(arr)
    if arr.size == 0 or min(arr.shape[:2]) < 2:
        raise DataError(f"patch {source} is empty ({arr.shape})", "check the map/strip coverage and the patch size")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"patch {source} holds NaN or infinite pixels", "fill or mask them in the source raster")
    if modality == SAR and arr.ndim == 3:
        arr = arr.mean(axis=-1)
    img = Image.fromarray(spec.to_uint8(arr, modality))
    h, w = spec.image_size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    out = np.asarray(img, dtype=np.uint8)
    if out.shape != (h, w, 3):
        raise DataError(f"patch {source} converts to shape {out.shape}, not ({h}, {w}, 3)",
                        "check the preprocessing of this modality")
    return out


def _loader_signature(loader: ImageLoader, files: set[str], arrays: dict[int, str]) -> str:
    """A stable description of a loader; records the files it reads and hashes in-memory pixels.

    Dataclass loaders (:class:`~sarbridge.tasks.geo.grid.RasterWindow`, ``ImageFile`` ...) are described
    by their ``repr`` (path and window); other callables only by their type (their pixels are then
    covered by the source string alone).
    """
    path = getattr(loader, "path", None)
    if isinstance(path, (str, os.PathLike)) and str(path):
        files.add(os.path.abspath(path))
    desc = repr(loader) if dataclasses.is_dataclass(loader) else f"{type(loader).__module__}.{type(loader).__qualname__}"
    array = getattr(loader, "array", None)
    if isinstance(array, np.ndarray):
        digest = arrays.get(id(array))
        if digest is None:
            h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
            h.update(np.ascontiguousarray(array).data)
            digest = arrays[id(array)] = h.hexdigest()[:16]
        desc += f"@{digest}"
    return desc


def patch_cache_key(items: Sequence[GeoReference | GeoQuery], modality: str, spec: PreprocessSpec) -> str:
    """Hash of the preprocessing, the modality, the patches (source strings and loader windows) and
    of the files behind the loaders (absolute path, size, modification time).

    Raises:
        DataError: a file behind a loader is missing.
    """
    files: set[str] = set()
    arrays: dict[int, str] = {}
    patches = [[it.source, _loader_signature(it.load, files, arrays)] for it in items]
    stats = []
    for path in sorted(files):
        try:
            st = os.stat(path)
        except OSError:
            raise DataError(f"image '{path}' not found", "check the path or regenerate the dataset") from None
        stats.append([path, st.st_size, st.st_mtime_ns])
    payload = json.dumps({"version": GEO_CACHE_FORMAT_VERSION, "modality": modality, "spec": spec.to_dict(),
                          "patches": patches, "files": stats}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


class GeoPatchCache(MemmapCacheFolder):
    """A built patch-cache folder (:func:`build_patch_cache`), mapped lazily and read-only.

    Use :meth:`open` to check a folder before trusting it.
    """

    format_version = GEO_CACHE_FORMAT_VERSION

    def get(self, row: int) -> np.ndarray:
        """A writable uint8 ``(H, W, 3)`` copy of one patch."""
        return np.array(self.images[row])


def build_patch_cache(
    items: Sequence[GeoReference | GeoQuery],
    modality: str,
    spec: PreprocessSpec,
    cache_dir: str | Path,
    progress: bool = True,
    num_workers: int = 0,
    desc: str = "caching patches",
) -> GeoPatchCache:
    """Open the patch cache of ``items`` in ``cache_dir``, building it when missing or broken.

    Under ``torchrun`` rank 0 builds (or opens) it first and the other ranks wait, then open it:
    every rank must call this.

    Args:
        items: references or queries (``load`` and ``source``), stored in this order.
        modality: ``optical`` or ``sar``.
        spec: the preprocessing.
        cache_dir: the cache root; the cache is ``cache_dir/geo-<patch_cache_key>``.
        progress: show a progress bar while building (rank 0 only).
        num_workers: preparing threads (0 = in this thread).
        desc: progress-bar label.

    Returns:
        The opened (read-only) cache.

    Raises:
        DataError: a bad patch (naming its source), a missing file, or an unwritable ``cache_dir``.
    """
    key = patch_cache_key(items, modality, spec)
    loaders = [it.load for it in items]
    sources = [it.source for it in items]
    h, w = spec.image_size

    def write(folder: Path, show: bool) -> None:
        n = len(loaders)
        images = np.lib.format.open_memmap(folder / GEO_CACHE_IMAGES, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
        for i, img in map_with_progress(lambda j: patch_uint8(loaders[j](), modality, spec, sources[j]), range(n),
                                        num_workers, show, desc):
            images[i] = img
        images.flush()
        del images
        meta = {"version": GEO_CACHE_FORMAT_VERSION, "key": key, "modality": modality, "spec": spec.to_dict(),
                "image_size": [h, w], "count": n, "sources": sources}
        (folder / GEO_CACHE_INDEX).write_text(json.dumps(meta) + "\n", encoding="utf-8")  # written last

    return build_once(cache_dir, f"geo-{key}", write, lambda f: GeoPatchCache.open(f, key), progress)


class PatchImages(Dataset):
    """Tensors of reference (optical) or query (SAR) patches, cached in memory or on disk when asked.

    Args:
        items: references or queries (anything with ``load`` and ``source``).
        modality: ``optical`` or ``sar``.
        spec: the preprocessing.
        cache: keep prepared tensors in memory (small patches; saves decoding every epoch);
            ignored when ``cache_dir`` is given.
        cache_dir: keep the patches once, as uint8, in a memory-mapped cache under this folder
            (:class:`GeoPatchCache`) instead; :meth:`preload` builds or opens it (collectively
            under ``torchrun``), else the first item does.
        num_workers: preparing threads while building the disk cache.
    """

    def __init__(self, items: Sequence[GeoReference | GeoQuery], modality: str, spec: PreprocessSpec, cache: bool = True,
                 cache_dir: str | Path | None = None, num_workers: int = 0) -> None:
        self.items = list(items)
        self.loaders: list[ImageLoader] = [it.load for it in self.items]
        self.sources = [it.source for it in self.items]
        self.modality = modality
        self.spec = spec
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.num_workers = num_workers
        self.cache: dict[int, torch.Tensor] | None = {} if cache and cache_dir is None else None
        self.disk: GeoPatchCache | None = None
        self._to_tensor = T.Compose([T.ToTensor(), T.Normalize(spec.mean, spec.std)])

    def __len__(self) -> int:
        return len(self.loaders)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.cache_dir is not None:
            disk = self.disk if self.disk is not None else self.open_disk_cache(progress=False)
            return self._to_tensor(disk.get(index))
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        t = prepare_patch(self.loaders[index](), self.modality, self.spec, self.sources[index])
        if self.cache is not None:
            self.cache[index] = t
        return t

    def open_disk_cache(self, desc: str = "caching patches", progress: bool = True) -> GeoPatchCache:
        """Build (rank 0 under ``torchrun``, the others wait) or open the disk cache.

        Raises:
            DataError: no ``cache_dir`` was given, or building failed (a bad patch, an unwritable folder).
        """
        if self.cache_dir is None:
            raise DataError("this patch set has no disk cache", "construct PatchImages with cache_dir")
        self.disk = build_patch_cache(self.items, self.modality, self.spec, self.cache_dir, progress,
                                      self.num_workers, desc)
        return self.disk

    def preload(self, desc: str, progress: bool = True) -> None:
        """Read every patch once (a corrupt one stops the run before training); with a
        ``cache_dir``, build or open the disk cache instead."""
        if self.cache_dir is not None:
            self.open_disk_cache(desc, progress)
            return
        for i in progress_bar(range(len(self)), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            self[i]


class QueryPairs(Dataset):
    """Training pairs: a SAR query, its target optical reference, the target index and its position.

    ``cache``, ``cache_dir`` and ``num_workers`` are passed to the queries' :class:`PatchImages`.
    """

    def __init__(self, queries: Sequence[GeoQuery], references: PatchImages, ref_xy: np.ndarray, spec: PreprocessSpec,
                 cache: bool = True, cache_dir: str | Path | None = None, num_workers: int = 0) -> None:
        self.queries = list(queries)
        self.sar = PatchImages(self.queries, SAR, spec, cache, cache_dir, num_workers)
        self.refs = references
        self.ref_xy = torch.as_tensor(ref_xy, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        q = self.queries[index]
        return {"sar": self.sar[index], "optical": self.refs[q.target], "target": q.target,
                "ref_xy": self.ref_xy[q.target], "query": index}


@torch.no_grad()
def embed_patches(model: GeoEmbeddingNet, images: PatchImages, device: torch.device, batch_size: int = 64,
                  progress: bool = False, desc: str = "embedding") -> torch.Tensor:
    """L2-normalised embeddings ``(N, D)`` (float32, CPU) of a :class:`PatchImages` set.

    Under ``torchrun`` each rank embeds a contiguous shard and the shards are gathered, so every
    rank returns the same tensor (every rank must call this; progress on rank 0 only).
    """
    ctx = current_context()
    source: Dataset = images
    if ctx.distributed:
        source = Subset(images, list(shard_range(len(images), ctx.rank, ctx.world_size)))
        progress = progress and ctx.is_main
    was_training = model.training
    model.eval()
    out = []
    modality = MODALITY_INDEX[images.modality]
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in progress_bar(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        x = batch.to(device, non_blocking=True)
        m = torch.full((x.shape[0],), modality, dtype=torch.long, device=device)
        out.append(model.embed(x, m).float().cpu())
    model.train(was_training)
    local = torch.cat(out) if out else torch.zeros(0, getattr(model, "dim", 1))
    if ctx.distributed:
        return gather_rows(local, len(images), ctx)
    return local
