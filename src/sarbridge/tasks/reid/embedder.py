"""A trained re-identification model with its preprocessing, ready to embed images and rank a gallery.

Example::

    from sarbridge.tasks.reid.embedder import load_embedder

    emb = load_embedder("runs/demo/best.pt")
    q = emb.embed(["ship_opt.tif"], modality="optical")
    g = emb.embed(["a_sar.tif", "b_sar.tif"], modality="sar")
    idx, dist = emb.rank(q, g, k=2)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sarbridge.core.errors import DataError
from sarbridge.core.utils import resolve_device
from sarbridge.data.io import read_image
from sarbridge.data.records import OPTICAL, parse_modality
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.retrieval.rankings import rank

if TYPE_CHECKING:
    from sarbridge.tasks.reid.model import ReIDModel

ImageLike = str | Path | np.ndarray | torch.Tensor | Any


def image_array(item: ImageLike) -> np.ndarray:
    """Pixels of a path, PIL image, array or tensor as an ``(H, W)`` or ``(H, W, 3)`` array.

    Channel-first arrays and tensors are moved to channels-last and a single channel is dropped.

    Raises:
        DataError: an unsupported object, a bad shape, or NaN / infinite values.
    """
    if isinstance(item, (str, Path)):
        return read_image(item)
    if isinstance(item, torch.Tensor):
        arr = item.detach().cpu().numpy()
    elif isinstance(item, np.ndarray):
        arr = item
    elif hasattr(item, "mode") and hasattr(item, "size"):  # PIL image
        arr = np.asarray(item)
    else:
        raise DataError(f"cannot embed an object of type {type(item).__name__}", "pass paths, PIL images, arrays or tensors")
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DataError(f"image array has shape {arr.shape}", "pass (H, W) or (H, W, 3) images")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError("image array contains NaN or infinite values", "fill or mask them first")
    return arr


class Embedder:
    """A trained model with its preprocessing, ready to embed images.

    Args:
        model: a re-identification model (``embed(image, modality, size)``).
        spec: the preprocessing the model was trained with.
        device: where to run.
    """

    def __init__(self, model: ReIDModel, spec: PreprocessSpec, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Embedder:
        """Load a re-identification checkpoint (``best.pt`` / ``last.pt`` of ``sarbridge train``).

        Raises:
            CheckpointError: missing, damaged or another task's file, or weights that do not fit.
        """
        from sarbridge.tasks.reid.task import model_from_checkpoint  # noqa: PLC0415 - lazy: pulls in timm; the registry imports this module

        model, spec, _, _ = model_from_checkpoint(path)
        return cls(model, spec, resolve_device(device))

    @torch.no_grad()
    def embed(
        self,
        items: ImageLike | Sequence[ImageLike],
        modality: str | Sequence[str],
        batch_size: int = 64,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Embed images; returns an (N, D) float32 CPU tensor (L2-normalised by default).

        Args:
            items: one or more file paths, PIL images, arrays or tensors (raw pixels: 8-bit RGB
                for optical, float backscatter for SAR).
            modality: ``optical``/``RGB`` or ``SAR``, one for all or one per item.
            batch_size: images per forward pass.
            normalize: L2-normalise the features.

        Raises:
            DataError: unknown modality, a count mismatch, or an unreadable image.
        """
        single = isinstance(items, (str, Path, np.ndarray, torch.Tensor)) or hasattr(items, "mode")
        seq = [items] if single else list(items)  # type: ignore[arg-type]
        mods = [modality] * len(seq) if isinstance(modality, str) else list(modality)
        if len(mods) != len(seq):
            raise DataError(f"{len(seq)} images but {len(mods)} modalities", "give one modality or one per image")
        mods = [parse_modality(m) for m in mods]
        feats = []
        for start in range(0, len(seq), batch_size):
            imgs, sizes, midx = [], [], []
            for item, mod in zip(seq[start : start + batch_size], mods[start : start + batch_size]):
                img, size = self.spec.prepare(image_array(item), mod)
                imgs.append(img)
                sizes.append(size)
                midx.append(0 if mod == OPTICAL else 1)
            f = self.model.embed(torch.stack(imgs).to(self.device), torch.tensor(midx, device=self.device),
                                 torch.stack(sizes).to(self.device))
            feats.append(f.float().cpu())
        out = torch.cat(feats) if feats else torch.zeros(0, 0)
        return torch.nn.functional.normalize(out, dim=1) if normalize else out

    def rank(self, query: torch.Tensor, gallery: torch.Tensor, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """See :func:`sarbridge.retrieval.rankings.rank`."""
        return rank(query, gallery, k)


def load_embedder(path: str | Path, device: str = "auto") -> Embedder:
    """Load a checkpoint written by ``sarbridge train`` for embedding and ranking.

    Args:
        path: ``best.pt`` / ``last.pt`` of a re-identification run.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    return Embedder.from_checkpoint(path, device)


__all__ = ["Embedder", "ImageLike", "image_array", "load_embedder"]
