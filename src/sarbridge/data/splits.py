"""Train/query/gallery splits, the three cross-modal protocols and the validation hold-out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.data.records import OPTICAL, SAR, Sample

PROTOCOLS = ("all2all", "opt2sar", "sar2opt")
#: Display titles of the protocols (tables, rankings, the report), in protocol order.
PROTOCOL_TITLES = {"all2all": "ALL->ALL", "opt2sar": "Optical->SAR", "sar2opt": "SAR->Optical"}
SUBSET_FOLDERS = {"opt2sar": "O2S", "sar2opt": "S2O"}


@dataclass
class ReIDSplits:
    """A re-identification dataset as lists of samples.

    Attributes:
        train: training images.
        query: ALL->ALL queries.
        gallery: ALL->ALL gallery (distractors included, pid -1).
        subsets: fixed protocol folders, e.g. ``{"opt2sar": (query, gallery)}``, when shipped.
        root: where the data came from (for messages and results).
    """

    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    subsets: dict[str, tuple[list[Sample], list[Sample]]] = field(default_factory=dict)
    root: str = ""


def build_protocols(
    splits: ReIDSplits,
) -> tuple[dict[str, tuple[list[Sample], list[Sample]]], str]:
    """The ALL->ALL, Optical->SAR and SAR->Optical query/gallery pairs.

    Optical->SAR and SAR->Optical use the fixed ``subset/O2S`` / ``subset/S2O`` folders when both are
    present, else they are derived by filtering query and gallery by modality.

    Returns:
        ``(protocols, source)`` with source ``"subset folders"`` or ``"derived"``.
    """
    out = {"all2all": (splits.query, splits.gallery)}
    if all(name in splits.subsets for name in SUBSET_FOLDERS):
        for name in SUBSET_FOLDERS:
            out[name] = splits.subsets[name]
        return out, "subset folders"
    out["opt2sar"] = (
        [s for s in splits.query if s.modality == OPTICAL],
        [s for s in splits.gallery if s.modality == SAR],
    )
    out["sar2opt"] = (
        [s for s in splits.query if s.modality == SAR],
        [s for s in splits.gallery if s.modality == OPTICAL],
    )
    return out, "derived"


def holdout_validation(
    train: list[Sample], fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Hold out a fraction of the training identities for model selection.

    Only identities with both modalities are eligible, so that the validation protocol
    (Optical->SAR and SAR->Optical within the held-out ids) is defined. At least two
    identities are held out when any are, and at least two stay for training.

    Returns:
        ``(train_samples, val_samples)``; ``val_samples`` is empty when ``fraction`` is 0 or
        too few identities qualify.
    """
    if fraction <= 0:
        return list(train), []
    by_pid: dict[int, set[str]] = {}
    for s in train:
        by_pid.setdefault(s.pid, set()).add(s.modality)
    eligible = sorted(pid for pid, mods in by_pid.items() if len(mods) == 2 and pid >= 0)
    n_ids = sum(1 for pid in by_pid if pid >= 0)
    n_val = int(round(fraction * n_ids))
    n_val = min(max(n_val, 2), len(eligible), n_ids - 2)
    if n_val < 2:
        return list(train), []
    rng = np.random.default_rng(seed)
    val_ids = set(rng.choice(eligible, size=n_val, replace=False).tolist())
    return [s for s in train if s.pid not in val_ids], [s for s in train if s.pid in val_ids]


def check_nonempty(samples: list[Sample], what: str, where: str) -> None:
    """Raise a clear error for an empty split."""
    if not samples:
        raise DataError(f"{what} in '{where}' is empty", "add images or point --data at the right folder")
