"""Torch datasets over :class:`~sarbridge.geo.patches.LocalisationData`: patch tensors and training pairs.

Reference patches are optical, queries SAR; both go through the checkpoint's
:class:`~sarbridge.data.transforms.PreprocessSpec` (SAR: ``max``/``percentile`` scaling and optional
despeckling; resize to ``image_size``), so training, evaluation and ``geo locate`` see the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sarbridge.data.records import OPTICAL, SAR
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.errors import DataError
from sarbridge.geo.patches import GeoQuery, GeoReference, ImageLoader

MODALITY_INDEX = {OPTICAL: 0, SAR: 1}


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


class PatchImages(Dataset):
    """Tensors of reference (optical) or query (SAR) patches, cached in memory when asked.

    Args:
        items: references or queries (anything with ``load`` and ``source``).
        modality: ``optical`` or ``sar``.
        spec: the preprocessing.
        cache: keep prepared tensors (small patches; saves decoding every epoch).
    """

    def __init__(self, items: Sequence[GeoReference | GeoQuery], modality: str, spec: PreprocessSpec, cache: bool = True) -> None:
        self.loaders: list[ImageLoader] = [it.load for it in items]
        self.sources = [it.source for it in items]
        self.modality = modality
        self.spec = spec
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.loaders)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        t = prepare_patch(self.loaders[index](), self.modality, self.spec, self.sources[index])
        if self.cache is not None:
            self.cache[index] = t
        return t

    def preload(self, desc: str, progress: bool = True) -> None:
        """Read every patch once (a corrupt one stops the run before training)."""
        for i in tqdm(range(len(self)), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            self[i]


class QueryPairs(Dataset):
    """Training pairs: a SAR query, its target optical reference, the target index and its position."""

    def __init__(self, queries: Sequence[GeoQuery], references: PatchImages, ref_xy: np.ndarray, spec: PreprocessSpec,
                 cache: bool = True) -> None:
        self.queries = list(queries)
        self.sar = PatchImages(self.queries, SAR, spec, cache)
        self.refs = references
        self.ref_xy = torch.as_tensor(ref_xy, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        q = self.queries[index]
        return {"sar": self.sar[index], "optical": self.refs[q.target], "target": q.target,
                "ref_xy": self.ref_xy[q.target], "query": index}


@torch.no_grad()
def embed_patches(model: torch.nn.Module, images: PatchImages, device: torch.device, batch_size: int = 64,
                  progress: bool = False, desc: str = "embedding") -> torch.Tensor:
    """L2-normalised embeddings ``(N, D)`` (float32, CPU) of a :class:`PatchImages` set.

    Under ``torchrun`` each rank embeds a contiguous shard and the shards are gathered, so every
    rank returns the same tensor (every rank must call this; progress on rank 0 only).
    """
    from torch.utils.data import Subset

    from sarbridge.engine.distributed import current_context, gather_rows, shard_range

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
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        x = batch.to(device, non_blocking=True)
        m = torch.full((x.shape[0],), modality, dtype=torch.long, device=device)
        out.append(model.embed(x, m).float().cpu())
    model.train(was_training)
    local = torch.cat(out) if out else torch.zeros(0, getattr(model, "dim", 1))
    if ctx.distributed:
        return gather_rows(local, len(images), ctx)
    return local
