"""Feature extraction and the re-identification evaluator (fast-reid style).

:class:`ReIDEvaluator` accumulates query and gallery features batch by batch (``process``) and
``evaluate`` returns R1/R5/R10/mAP/mINP for one protocol; :func:`evaluate_protocols` runs the
ALL->ALL, Optical->SAR and SAR->Optical protocols from one bank of extracted features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sarbridge.data.dataset import ImageDataset
from sarbridge.data.records import Sample
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.metrics import evaluate, summarize


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
) -> torch.Tensor:
    """Retrieval features (N, D) of ``samples`` in order, on the CPU, float32."""
    ds = ImageDataset(samples, spec)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    feats = []
    embed = model.embed if hasattr(model, "embed") else model
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        f = embed(batch["image"].to(device, non_blocking=True), batch["modality"].to(device),
                  batch["size"].to(device))
        feats.append(f.float().cpu())
    model.train(was_training)
    return torch.cat(feats) if feats else torch.zeros(0, 0)


class ReIDEvaluator:
    """Collects features of the first ``num_query`` items as queries, the rest as gallery.

    Args:
        num_query: how many of the processed items are queries.
        metric: distance for ranking (``sqeuclidean`` on L2-normalised features is the reference).
        normalize: L2-normalise features first.
        max_rank: CMC length.
        exclude_same_modality: drop gallery items of the query's modality.
    """

    def __init__(
        self,
        num_query: int,
        metric: str = "sqeuclidean",
        normalize: bool = True,
        max_rank: int = 50,
        exclude_same_modality: bool = False,
    ) -> None:
        self.num_query = num_query
        self.metric = metric
        self.normalize = normalize
        self.max_rank = max_rank
        self.exclude_same_modality = exclude_same_modality
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

    def evaluate(self) -> dict[str, Any]:
        """Ranks queries against the gallery; returns the summary (percentages) plus raw ``cmc``."""
        feats = torch.cat(self._feats)
        pids, mods = np.concatenate(self._pids), np.concatenate(self._mods)
        q, g = slice(0, self.num_query), slice(self.num_query, None)
        dist = pairwise_distance(feats[q], feats[g], metric=self.metric, normalize=self.normalize)
        res = evaluate(dist, pids[q], pids[g], q_mods=mods[q], g_mods=mods[g], max_rank=self.max_rank,
                       exclude_same_modality=self.exclude_same_modality)
        out = summarize(res)
        out["cmc"] = res["cmc"].tolist()
        return out


def evaluate_protocols(
    bank: dict[str, torch.Tensor],
    protocols: dict[str, tuple[list[Sample], list[Sample]]],
    max_rank: int = 50,
) -> dict[str, dict[str, Any]]:
    """Evaluate each protocol from a ``path -> feature`` bank.

    Protocols whose query or gallery is empty, or without any matching query, are reported with
    ``queries: 0`` and no metrics rather than failing the whole evaluation.
    """
    results: dict[str, dict[str, Any]] = {}
    for name, (query, gallery) in protocols.items():
        if not query or not gallery:
            results[name] = {"queries": 0, "note": "empty query or gallery"}
            continue
        ev = ReIDEvaluator(len(query), max_rank=max_rank)
        for part in (query, gallery):
            ev.process(torch.stack([bank[s.path] for s in part]), [s.pid for s in part],
                       [s.modality_index for s in part], [s.camid for s in part])
        try:
            results[name] = ev.evaluate()
        except ValueError as exc:
            results[name] = {"queries": 0, "note": str(exc)}
    return results
