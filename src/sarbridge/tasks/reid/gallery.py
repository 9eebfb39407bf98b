"""Searchable re-ID galleries: embed a dataset split with a trained checkpoint, save an index, query it.

:func:`build_gallery_index` embeds the gallery (or every image) of a HOSS-layout folder or a
manifest CSV with a re-identification checkpoint and saves an
:class:`~sarbridge.retrieval.index.EmbeddingIndex` whose manifest records the checkpoint path and
SHA-256. :func:`query_gallery_index` refuses to search that index with any other model, because
embeddings of different models are not comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sarbridge.core.errors import DataError, SarbridgeError
from sarbridge.core.progress import progress_bar
from sarbridge.core.utils import file_digest
from sarbridge.data.hoss import load_hoss
from sarbridge.data.manifest import read_manifest
from sarbridge.data.records import Sample, parse_modality
from sarbridge.retrieval.index import EmbeddingIndex, available_kinds
from sarbridge.tasks.reid.embedder import load_embedder
from sarbridge.tasks.reid.results import TASK

__all__ = ["SPLITS", "build_gallery_index", "query_gallery_index", "read_gallery_samples"]

#: Accepted ``split`` arguments of :func:`build_gallery_index`.
SPLITS: tuple[str, ...] = ("gallery", "all")


def read_gallery_samples(data: str | Path, split: str = "gallery") -> tuple[list[Sample], str]:
    """The images to index and the dataset root.

    Args:
        data: HOSS-layout folder (``bounding_box_test`` is the gallery; ``query`` and
            ``bounding_box_train`` join for ``split="all"``) or a manifest CSV (rows of split
            ``gallery``, or every row).
        split: ``"gallery"`` or ``"all"``.

    Raises:
        SarbridgeError: unknown split. DataError: unreadable dataset (see the readers).
    """
    if split not in SPLITS:
        raise SarbridgeError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
    p = Path(data)
    if p.suffix.lower() == ".csv":
        samples = read_manifest(p)
        if split == "gallery":
            samples = [s for s in samples if s.split == "gallery"]
        if not samples:
            raise DataError(f"manifest '{p}' has no rows of split 'gallery'", "add gallery rows or use --split all")
        return samples, str(p.resolve())
    splits = load_hoss(p, require_train=False)
    samples = list(splits.gallery) if split == "gallery" else [*splits.train, *splits.query, *splits.gallery]
    return samples, str(Path(splits.root).resolve())


def build_gallery_index(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    split: str = "gallery",
    kind: str = "flat",
    device: str = "auto",
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Embed a dataset split with a re-ID checkpoint and save a searchable index.

    Each item's metadata is ``{"id": pid, "modality", "path", "camid", "split"}``; the index info
    holds ``checkpoint`` (absolute path), ``checkpoint_sha256``, ``task: "reid"`` and ``data``.

    Args:
        checkpoint: ``best.pt`` / ``last.pt`` of ``sarbridge train``.
        data: HOSS folder or manifest CSV (see :func:`read_gallery_samples`).
        out: index folder to write.
        split: ``"gallery"`` or ``"all"``.
        kind: index kind (``"flat"``, ``"ivfpq"``, ``"hnsw"``).
        device: ``auto``, ``cpu``, ``cuda[:N]`` for the model.
        batch_size: images per forward pass.
        overwrite: replace an index already in ``out``.
        progress: show a progress bar.

    Returns:
        The index folder.

    Raises:
        SarbridgeError: ``out`` holds an index and ``overwrite`` is False, bad kind / split,
            unreadable checkpoint or data.
    """
    out_dir = Path(out)
    if (out_dir / "manifest.json").exists() and not overwrite:
        raise SarbridgeError(f"'{out_dir}' already holds an index", "pass --overwrite or choose another --out")
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise SarbridgeError(f"checkpoint '{ckpt}' not found", "pass the best.pt of a 'sarbridge train' run")
    if kind not in available_kinds():
        raise SarbridgeError(f"unknown index kind '{kind}'", f"use one of {', '.join(available_kinds())}")
    samples, root = read_gallery_samples(data, split)
    embedder = load_embedder(ckpt, device)
    feats = []
    for start in progress_bar(range(0, len(samples), batch_size), desc="gallery embeddings", disable=not progress,
                      leave=False, dynamic_ncols=True):
        chunk = samples[start: start + batch_size]
        feats.append(embedder.embed([s.path for s in chunk], [s.modality for s in chunk], batch_size=batch_size))
    emb = torch.cat(feats).numpy()
    index = EmbeddingIndex(emb.shape[1], kind=kind, normalize=False)
    index.add(emb, [{"id": s.pid, "modality": s.modality, "path": str(Path(s.path).resolve()),
                     "camid": s.camid, "split": s.split} for s in samples])
    info = {"checkpoint": str(ckpt.resolve()), "checkpoint_sha256": file_digest(ckpt), "task": TASK,
            "data": root, "split": split}
    return index.save(out_dir, info=info)


def gallery_checkpoint(index_dir: str | Path, info: dict[str, Any]) -> str:
    """The checkpoint a re-ID gallery index was built with, checked to be the same file.

    Args:
        index_dir: the index folder (for messages).
        info: the index's ``info`` (from :func:`build_gallery_index`).

    Raises:
        DataError: not a re-ID gallery index, or its checkpoint is missing or has changed.
    """
    ckpt, digest = info.get("checkpoint"), info.get("checkpoint_sha256")
    if info.get("task") != TASK or not isinstance(ckpt, str) or not isinstance(digest, str):
        raise DataError(f"index '{index_dir}' is not a re-ID gallery index (no checkpoint in its info)",
                        "build it with 'sarbridge index build'")
    if not Path(ckpt).is_file():
        raise DataError(f"checkpoint '{ckpt}' of index '{index_dir}' not found",
                        "restore the checkpoint or rebuild the index")
    if file_digest(ckpt) != digest:
        raise DataError(f"index '{index_dir}' was built with another model: checkpoint '{ckpt}' has changed",
                        "rebuild the index with 'sarbridge index build --overwrite'")
    return ckpt


def query_gallery_index(
    index_dir: str | Path,
    image: str | Path,
    modality: str | None = None,
    k: int = 10,
    device: str = "auto",
) -> dict[str, Any]:
    """Embed one query image with the index's checkpoint and return the top-``k`` gallery items.

    Args:
        index_dir: folder written by :func:`build_gallery_index`.
        image: query image file.
        modality: ``optical``/``RGB`` or ``SAR``; None infers it from a HOSS-style name suffix
            (``..._RGB.tif`` / ``..._SAR.tif``).
        k: results to return.
        device: where to run the model.

    Returns:
        ``{"query", "modality", "results": [{"rank", "score", "id", "modality", "path"}, ...]}``,
        best first.

    Raises:
        DataError: the index is damaged, was built with another model (digest mismatch), its
            checkpoint is missing, the image is missing, or the modality is unknown / cannot be
            inferred.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SarbridgeError(f"k must be a positive integer, got {k!r}")
    img = Path(image)
    if not img.is_file():
        raise DataError(f"query image '{img}' not found", "check the path")
    if modality is None:
        token = img.stem.rsplit("_", 1)[-1] if "_" in img.stem else ""
        if token.upper() not in ("RGB", "SAR"):
            raise DataError(f"cannot infer the modality of '{img.name}' (no _RGB/_SAR suffix)",
                            "pass --modality optical or --modality sar")
        modality = token
    mod = parse_modality(modality, where="--modality")
    index = EmbeddingIndex.load(index_dir)
    ckpt = gallery_checkpoint(index_dir, index.info)
    q = load_embedder(ckpt, device).embed([img], mod).numpy()
    scores, ids = index.search(q, k)
    results: list[dict[str, Any]] = []
    for score, i in zip(scores[0].tolist(), ids[0].tolist()):
        if i < 0:
            continue
        m = index.metadata[i]
        results.append({"rank": len(results) + 1, "score": float(score), "id": m.get("id"),
                        "modality": m.get("modality"), "path": m.get("path")})
    return {"query": str(img), "modality": mod, "results": results}
