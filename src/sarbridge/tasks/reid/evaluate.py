"""Feature extraction and the re-identification evaluator (fast-reid style).

:class:`ReIDEvaluator` accumulates query and gallery features batch by batch (``process``) and
``evaluate`` returns R1/R5/R10/mAP/mINP for one protocol, optionally after query expansion and
re-ranking (k-reciprocal or GNN); :func:`evaluate_protocols` runs the ALL->ALL, Optical->SAR and
SAR->Optical protocols from one bank of extracted features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from sarbridge.core.config import RERANK_METHODS as CONFIG_RERANK_METHODS
from sarbridge.core.distributed import current_context, gather_rows, shard_range
from sarbridge.core.progress import progress_bar
from sarbridge.data.cache import build_cache
from sarbridge.data.records import Sample
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.metrics import evaluate, evaluate_features, summarize
from sarbridge.retrieval.rankings import QueryRankings, rank_lists
from sarbridge.retrieval.rerank import (
    GNNMode,
    alpha_query_expansion,
    average_query_expansion,
    gnn_rerank,
    k_reciprocal_rerank_features,
    k_reciprocal_rerank_topk,
)
from sarbridge.retrieval.similarity import similarity_gap
from sarbridge.tasks.reid.dataset import ImageDataset


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """Retrieval features (N, D) of ``samples`` in order, on the CPU, float32.

    Under ``torchrun`` each rank extracts a contiguous shard
    (:func:`~sarbridge.core.distributed.shard_range`) and the shards are gathered, so every
    rank returns the same ``(N, D)`` tensor; every rank must call this (progress on rank 0 only).
    With ``cache_dir`` the images are read from the on-disk preprocessing cache of the whole
    sample list (:func:`~sarbridge.data.cache.build_cache`; built on first use).
    """

    ctx = current_context()
    disk = None
    if cache_dir is not None and len(samples):

        disk = build_cache(samples, spec, cache_dir, progress and ctx.is_main, desc=f"caching {desc}")
    if ctx.distributed:
        mine = shard_range(len(samples), ctx.rank, ctx.world_size)
        local = _extract(model, [samples[i] for i in mine], spec, device, batch_size, num_workers,
                         progress and ctx.is_main, desc, disk)
        return gather_rows(local, len(samples), ctx)
    return _extract(model, samples, spec, device, batch_size, num_workers, progress, desc, disk)


@torch.no_grad()
def _extract(model: torch.nn.Module, samples: Sequence[Sample], spec: PreprocessSpec, device: torch.device,
             batch_size: int, num_workers: int, progress: bool, desc: str, disk_cache: Any = None) -> torch.Tensor:
    """Single-process extraction of :func:`extract_features`."""
    ds = ImageDataset(samples, spec, disk_cache=disk_cache)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    feats = []
    # the model's ``embed`` method where it has one (e.g. ReIDModel), else its forward
    embed = cast(Callable[..., torch.Tensor], model.embed if hasattr(model, "embed") else model)
    for batch in progress_bar(loader, desc=desc, enabled=progress, unit="batch"):
        f = embed(batch["image"].to(device, non_blocking=True), batch["modality"].to(device),
                  batch["size"].to(device))
        feats.append(f.float().cpu())
    model.train(was_training)
    return torch.cat(feats) if feats else torch.zeros(0, 0)


#: Re-ranking methods accepted by :class:`ReIDEvaluator` (and ``eval.rerank``).
RERANK_METHODS: tuple[str, ...] = CONFIG_RERANK_METHODS
#: Query expansion methods accepted by :class:`ReIDEvaluator` (and ``eval.query_expansion``).
QE_METHODS: tuple[str, ...] = ("none", "aqe", "alpha")
# Gallery items outside a query's re-ranked top-k get this distance (evaluated after them).
_FAR: float = 1.0e6


class ReIDEvaluator:
    """Collects features of the first ``num_query`` items as queries, the rest as gallery.

    Ranking (fast-reid style): optional query expansion of the query features against the
    gallery, then the distance matrix -- plain ``metric`` distances, k-reciprocal re-ranked
    distances (:func:`~sarbridge.retrieval.rerank.k_reciprocal_rerank_features` with ``metric``
    when ``M + N <= dense_limit``, else
    :func:`~sarbridge.retrieval.rerank.k_reciprocal_rerank_topk` with every item outside a
    query's best ``rerank_topk`` at a large distance, so CMC up to ``rerank_topk`` is exact and
    mAP counts later matches as ranked after them), or GNN re-ranked distances
    (:func:`~sarbridge.retrieval.rerank.gnn_rerank`, ``1 - cos`` of the propagated features,
    with ``k1`` / ``k2``) -- and :func:`~sarbridge.retrieval.metrics.evaluate`.

    Args:
        num_query: how many of the processed items are queries.
        metric: distance for ranking (``sqeuclidean`` on L2-normalised features is the reference).
        normalize: L2-normalise features first (query expansion always works on, and returns,
            normalised features).
        max_rank: CMC length.
        exclude_same_modality: drop gallery items of the query's modality.
        rerank: ``"none"``, ``"k-reciprocal"``, ``"gnn"`` (the published adjacency form) or
            ``"gnn-features"`` (the same propagation on feature vectors, bounded memory).
        k1: k-reciprocal neighbourhood size.
        k2: k-reciprocal local query expansion size.
        lambda_value: weight of the original distance in the k-reciprocal blend.
        query_expansion: ``"none"``, ``"aqe"`` or ``"alpha"``, applied to the queries before
            ranking.
        qe_k: gallery neighbours used by query expansion.
        qe_alpha: exponent of alpha-QE.
        dense_limit: largest ``M + N`` re-ranked with the dense k-reciprocal version.
        rerank_topk: gallery items kept per query by the memory-bounded version.
        gnn_layers: GNN propagation layers.
        gnn_k1: GNN graph neighbours (paper: 26).
        gnn_k2: GNN neighbours aggregated per layer (paper: 7).
    """

    def __init__(
        self,
        num_query: int,
        metric: str = "sqeuclidean",
        normalize: bool = True,
        max_rank: int = 50,
        exclude_same_modality: bool = False,
        rerank: str = "none",
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        query_expansion: str = "none",
        qe_k: int = 5,
        qe_alpha: float = 3.0,
        dense_limit: int = 6000,
        rerank_topk: int = 1000,
        gnn_layers: int = 2,
        gnn_k1: int = 26,
        gnn_k2: int = 7,
    ) -> None:
        if rerank not in RERANK_METHODS:
            raise ValueError(f"unknown rerank {rerank!r}; use one of {', '.join(RERANK_METHODS)}")
        if query_expansion not in QE_METHODS:
            raise ValueError(f"unknown query_expansion {query_expansion!r}; use one of {', '.join(QE_METHODS)}")
        self.num_query = num_query
        self.metric = metric
        self.normalize = normalize
        self.max_rank = max_rank
        self.exclude_same_modality = exclude_same_modality
        self.rerank = rerank
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
        self.query_expansion = query_expansion
        self.qe_k, self.qe_alpha = qe_k, qe_alpha
        self.dense_limit, self.rerank_topk, self.gnn_layers = dense_limit, rerank_topk, gnn_layers
        self.gnn_k1, self.gnn_k2 = gnn_k1, gnn_k2
        self.reset()

    def reset(self) -> None:
        self._feats: list[torch.Tensor] = []
        self._pids: list[np.ndarray] = []
        self._mods: list[np.ndarray] = []
        self._cams: list[np.ndarray] = []

    def process(self, features: torch.Tensor, pids: Any, modalities: Any, camids: Any | None = None) -> None:
        """Add a batch of features with their identities and modality indices."""
        self._feats.append(torch.as_tensor(features).detach().float().cpu())
        self._pids.append(np.asarray(pids).reshape(-1))
        self._mods.append(np.asarray(modalities).reshape(-1))
        self._cams.append(np.zeros(len(self._pids[-1]), int) if camids is None else np.asarray(camids).reshape(-1))

    def _expand_queries(self, qf: torch.Tensor, gf: torch.Tensor) -> torch.Tensor:
        """Query features after the configured query expansion (unchanged with ``"none"``)."""
        if self.query_expansion == "aqe":
            return average_query_expansion(qf, gf, k=self.qe_k)
        if self.query_expansion == "alpha":
            return alpha_query_expansion(qf, gf, k=self.qe_k, alpha=self.qe_alpha)
        return qf

    def distances(self, qf: torch.Tensor, gf: torch.Tensor) -> np.ndarray:
        """``(M, N)`` ranking distances after query expansion and re-ranking (see the class)."""
        qf = self._expand_queries(qf, gf)
        if self.rerank == "none":
            return pairwise_distance(qf, gf, metric=self.metric, normalize=self.normalize)
        if self.rerank in ("gnn", "gnn-features"):
            mode: GNNMode = "adjacency" if self.rerank == "gnn" else "features"
            return gnn_rerank(qf, gf, k1=self.gnn_k1, k2=self.gnn_k2, layers=self.gnn_layers, mode=mode)
        m, n = qf.shape[0], gf.shape[0]
        if m + n <= self.dense_limit:
            return k_reciprocal_rerank_features(qf, gf, k1=self.k1, k2=self.k2, lambda_value=self.lambda_value,
                                                distance=self.metric, normalize=self.normalize)
        top_d, top_i = k_reciprocal_rerank_topk(qf, gf, k1=self.k1, k2=self.k2, lambda_value=self.lambda_value,
                                                topk=self.rerank_topk, distance=self.metric,
                                                normalize=self.normalize)
        dist = np.full((m, n), _FAR, dtype=np.float32)
        np.put_along_axis(dist, top_i, top_d, axis=1)
        return dist

    def evaluate(self) -> dict[str, Any]:
        """Ranks queries against the gallery; returns the summary (percentages) plus raw ``cmc``
        and ``similarity`` (:func:`~sarbridge.retrieval.similarity.similarity_gap` of the
        features: cosine of matching versus non-matching pairs)."""
        return self._evaluate(0)[0]

    def evaluate_with_rankings(self, top_k: int = 10) -> tuple[dict[str, Any], QueryRankings]:
        """:meth:`evaluate` plus every query's top-``top_k`` gallery items (by the same ranking
        distances), the rank of its first match and its AP (as :func:`evaluate` computes it).

        Returns:
            ``(summary, rankings)``; rows of ``rankings`` follow the processed queries.
        """
        out, rankings = self._evaluate(max(1, int(top_k)))
        assert rankings is not None
        return out, rankings

    def _evaluate(self, top_k: int) -> tuple[dict[str, Any], QueryRankings | None]:
        feats = torch.cat(self._feats)
        pids, mods = np.concatenate(self._pids), np.concatenate(self._mods)
        q, g = slice(0, self.num_query), slice(self.num_query, None)
        # do scores separate matches from non-matches? cosine of the features, before any re-ranking
        similarity = similarity_gap(feats[q], feats[g], pids[q], pids[g], mods[q], mods[g],
                                    self.exclude_same_modality)
        if top_k <= 0 and self.rerank == "none":  # plain distances, no lists: never hold the (M, N) matrix
            res = evaluate_features(self._expand_queries(feats[q], feats[g]), feats[g], pids[q], pids[g],
                                    q_mods=mods[q], g_mods=mods[g], max_rank=self.max_rank,
                                    exclude_same_modality=self.exclude_same_modality, metric=self.metric,
                                    normalize=self.normalize)
            return {**summarize(res), "similarity": similarity, "cmc": res["cmc"].tolist()}, None
        dist = self.distances(feats[q], feats[g])
        res = evaluate(dist, pids[q], pids[g], q_mods=mods[q], g_mods=mods[g], max_rank=self.max_rank,
                       exclude_same_modality=self.exclude_same_modality)
        out: dict[str, Any] = {**summarize(res), "similarity": similarity}
        out["cmc"] = res["cmc"].tolist()
        if top_k <= 0:
            return out, None
        rankings = rank_lists(dist, pids[q], pids[g], mods[q], mods[g], self.exclude_same_modality, top_k)
        rankings.ap[res["valid_queries"]] = res["all_AP"]
        rankings.description = self.score_description()
        return out, rankings

    def score_description(self) -> str:
        """How the ranking distances are computed, for reports."""
        base = f"{self.metric} distance" + (" of L2-normalised features" if self.normalize else "")
        if self.query_expansion != "none":
            base += f" after {self.query_expansion} query expansion"
        if self.rerank == "k-reciprocal":
            base = f"k-reciprocal re-ranked distance (k1={self.k1}, k2={self.k2}, lambda={self.lambda_value}) over {base}"
        elif self.rerank in ("gnn", "gnn-features"):
            form = "adjacency" if self.rerank == "gnn" else "feature"
            base = (f"GNN re-ranked distance (1 - cos of {form} propagation, k1={self.gnn_k1}, k2={self.gnn_k2}, "
                    f"{self.gnn_layers} layers) over {base}")
        return base + "; smaller is better"


def evaluate_protocols(
    bank: dict[str, torch.Tensor],
    protocols: dict[str, tuple[list[Sample], list[Sample]]],
    max_rank: int = 50,
    rerank_options: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate each protocol from a ``path -> feature`` bank.

    Protocols whose query or gallery is empty, or without any matching query, are reported with
    ``queries: 0`` and no metrics rather than failing the whole evaluation.

    Args:
        bank: ``path -> feature`` of every image.
        protocols: ``name -> (queries, gallery)``.
        max_rank: CMC length.
        rerank_options: keyword arguments for :class:`ReIDEvaluator` (``rerank``, ``k1``,
            ``k2``, ``lambda_value``, ``query_expansion``, ``qe_k``, ``qe_alpha``, ...);
            None ranks by plain distance.
    """
    return evaluate_protocols_with_rankings(bank, protocols, max_rank, rerank_options, top_k=0)[0]


def evaluate_protocols_with_rankings(
    bank: dict[str, torch.Tensor],
    protocols: dict[str, tuple[list[Sample], list[Sample]]],
    max_rank: int = 50,
    rerank_options: dict[str, Any] | None = None,
    top_k: int = 10,
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[list[Sample], list[Sample], QueryRankings]]]:
    """:func:`evaluate_protocols` plus per-query rankings of every evaluated protocol.

    Args:
        bank, protocols, max_rank, rerank_options: as for :func:`evaluate_protocols`.
        top_k: gallery items kept per query; 0 computes no rankings.

    Returns:
        ``(results, rankings)``: the metrics, and ``name -> (queries, gallery, QueryRankings)``
        for the protocols that were evaluated (``QueryRankings.description`` says how the
        ranking distance was computed).
    """
    results: dict[str, dict[str, Any]] = {}
    rankings: dict[str, tuple[list[Sample], list[Sample], QueryRankings]] = {}
    for name, (query, gallery) in protocols.items():
        if not query or not gallery:
            results[name] = {"queries": 0, "note": "empty query or gallery"}
            continue
        ev = ReIDEvaluator(len(query), max_rank=max_rank, **(rerank_options or {}))
        for part in (query, gallery):
            ev.process(torch.stack([bank[s.path] for s in part]), [s.pid for s in part],
                       [s.modality_index for s in part], [s.camid for s in part])
        try:
            if top_k > 0:
                results[name], ranks = ev.evaluate_with_rankings(top_k)
                rankings[name] = (list(query), list(gallery), ranks)
            else:
                results[name] = ev.evaluate()
        except ValueError as exc:
            results[name] = {"queries": 0, "note": str(exc)}
    return results, rankings
