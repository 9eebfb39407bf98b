"""The ``rankings.json`` of a re-identification evaluation: one entry per protocol.

Items and queries carry ``path`` (the image file), ``id`` (identity; -1 for a distractor),
``modality`` and ``camid``; a gallery item is a ``match`` when it has the query's identity, else
``wrong``. ``ap`` follows :mod:`sarbridge.retrieval.metrics` (null for queries it skips because no
gallery item matches). The file format is :mod:`sarbridge.retrieval.rankings`'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sarbridge.data.records import Sample
from sarbridge.data.splits import PROTOCOL_TITLES
from sarbridge.retrieval.rankings import (
    TOP_K,
    QueryRankings,
    json_number,
    write_rankings,
)
from sarbridge.tasks.reid.results import TASK


def reid_status(query_pid: int, item_pid: int) -> str:
    """``match`` for a gallery item of the query's identity (never for pid -1), else ``wrong``."""
    return "match" if query_pid == item_pid and query_pid != -1 else "wrong"


def _sample_fields(s: Sample) -> dict[str, Any]:
    return {"path": str(s.path), "id": int(s.pid), "modality": str(s.modality), "camid": int(s.camid)}


def reid_protocol_entry(
    title: str, queries: Sequence[Sample], gallery: Sequence[Sample], rankings: QueryRankings,
    cmc: Sequence[float] | None,
) -> dict[str, Any]:
    """The ``rankings.json`` entry of one re-identification protocol.

    Args:
        title: display name (e.g. ``Optical->SAR``).
        queries: the protocol's queries (rows of ``rankings``).
        gallery: its gallery (indices of ``rankings.top_index``).
        rankings: per-query lists with ``ap`` filled in.
        cmc: CMC curve (fractions), or None.

    Returns:
        ``{"title", "cmc", "num_queries", "items", "queries"}``.
    """
    items: list[dict[str, Any]] = []
    remap: dict[int, int] = {}
    entries = []
    for i, q in enumerate(queries):
        top = []
        for j, gi in enumerate(rankings.top_index[i]):
            if gi < 0:
                continue
            gi = int(gi)
            if gi not in remap:
                remap[gi] = len(items)
                items.append(_sample_fields(gallery[gi]))
            top.append({"item": remap[gi], "score": json_number(rankings.top_score[i, j]),
                        "status": reid_status(int(q.pid), int(gallery[gi].pid))})
        fm = int(rankings.first_match_rank[i])
        entries.append({**_sample_fields(q), "ap": json_number(rankings.ap[i]), "first_match_rank": fm or None,
                        "top": top})
    return {"title": title, "cmc": [float(c) for c in cmc] if cmc is not None else [],
            "num_queries": len(entries), "items": items, "queries": entries}


def write_reid_rankings(
    run_dir: str | Path,
    protocols: Mapping[str, tuple[Sequence[Sample], Sequence[Sample], QueryRankings]],
    cmc: dict[str, Sequence[float]],
    description: str = "",
    top_k: int = TOP_K,
) -> Path:
    """``rankings.json`` of a re-identification evaluation.

    Args:
        run_dir: run folder.
        protocols: ``name -> (queries, gallery, rankings)``.
        cmc: ``name -> CMC curve`` (fractions).
        description: how the distances were computed; default: the first protocol's
            ``QueryRankings.description``.
        top_k: length of the stored lists.

    Returns:
        The path of the written file.
    """
    if not description:
        description = next((r.description for _, _, r in protocols.values() if r.description), "distance")

    out = {name: reid_protocol_entry(PROTOCOL_TITLES.get(name, name), q, g, r, cmc.get(name))
           for name, (q, g, r) in protocols.items()}
    return write_rankings(run_dir, TASK, out,
                          {"name": "distance", "higher_is_better": False, "description": description}, top_k)


__all__ = ["reid_protocol_entry", "reid_status", "write_reid_rankings"]
