"""The search settings an index uses, as a dict and as one line for reports.

:func:`search_settings` builds the dict of :meth:`EmbeddingIndex.search_settings
<sarbridge.retrieval.index.EmbeddingIndex.search_settings>` (and of
:func:`~sarbridge.retrieval.index.format.read_search_settings`, which reads only the manifest);
:func:`describe_search_settings` turns it into the line that ``geo locate`` and ``index query``
print.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe_search_settings", "search_settings"]


def search_settings(kind: str, params: Mapping[str, Any], tuning: Mapping[str, Any] | None,
                    trained: bool = True) -> dict[str, Any]:
    """The search-time settings of an index.

    Args:
        kind: the index kind.
        params: its effective parameters.
        tuning: the record of :func:`~sarbridge.retrieval.index.tune.tune_search`, or None.
        trained: whether an IVF index is trained (an untrained one searches exactly).

    Returns:
        ``{"kind", "exact": bool, "tuned": tuning dict or None}`` plus, for the IVF kinds,
        ``"nprobe"``, ``"rescore"`` (candidates re-scored exactly; None when it follows
        ``rerank``) and ``"rerank"``, and for ``hnsw`` ``"ef_search"``.
    """
    out: dict[str, Any] = {"kind": kind, "exact": kind == "flat"}
    if "nprobe" in params:
        out["exact"] = not trained
        out.update(nprobe=params["nprobe"], rescore=params.get("rescore"), rerank=params.get("rerank"))
    if "ef_search" in params:
        out["ef_search"] = params["ef_search"]
    out["tuned"] = dict(tuning) if tuning else None
    return out


def describe_search_settings(settings: Mapping[str, Any], k: int | None = None) -> str:
    """One line describing the settings of :func:`search_settings`.

    Args:
        settings: the dict of :func:`search_settings`.
        k: results per query, to state the re-scoring depth of ``rerank`` (``k * rerank``).

    Returns:
        e.g. ``"ivfsq, nprobe 8, 100 candidates re-scored exactly (tuned: recall@10 0.971 >= 0.95 on
        1000 sample queries)"``.
    """
    kind = settings.get("kind")
    if settings.get("exact"):
        text = f"{kind}, exact search" + ("" if kind == "flat" else " (index not trained)")
    elif "nprobe" in settings:
        rescore, rerank = settings.get("rescore"), settings.get("rerank")
        if rescore is None and rerank:
            depth = f"{k * rerank}" if k else f"{rerank} x k"
            depth += " candidates re-scored exactly"
        elif rescore:
            depth = f"{rescore} candidates re-scored exactly"
        else:
            depth = "compressed scores (no re-scoring)"
        text = f"{kind}, nprobe {settings['nprobe']}, {depth}"
    elif "ef_search" in settings:
        text = f"{kind}, ef_search {settings['ef_search']}"
    else:
        text = str(kind)
    tuned = settings.get("tuned")
    if tuned:
        sign = ">=" if tuned.get("reached") else "< target"
        text += (f" (tuned: recall@{tuned.get('k')} {tuned.get('recall_at_k')} {sign} "
                 f"{tuned.get('target_recall')} on {tuned.get('sample')} sample queries)")
    return text
