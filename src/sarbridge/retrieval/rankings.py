"""Per-query rankings persisted at evaluation time (``RUN_DIR/rankings.json``) for the HTML report.

Evaluation writes what :func:`sarbridge.app.report.html.write_report` needs so the report needs no
model, no GPU and no feature extraction: per protocol (re-identification: ``all2all``,
``opt2sar``, ``sar2opt``; localisation: ``coarse``, ``refined``, ``reranked``) the full CMC curve
and, for **every** query, its average precision, the rank of its first true match and its top-10
gallery items (score, status and -- localisation -- distance in metres to the true position).

File layout (JSON, written atomically)::

    {"version": 1, "task": "reid" | "geo", "top_k": 10,
     "score": {"name": "distance" | "similarity", "higher_is_better": bool, "description": str},
     "protocols": {NAME: {
         "title": str, "cmc": [fractions, cmc[k-1] = CMC@k], "num_queries": int,
         "items": [gallery item, ...],           # only the items some top-10 list names
         "queries": [{...query fields..., "ap": float | null, "first_match_rank": int | null,
                      "top": [{"item": i, "score": s, "status": "match" | "neighbour" | "wrong",
                               "distance_m": m (geo only)}, ...]}, ...]}}}

Re-identification items/queries carry ``path`` (the image file), ``id`` (identity; -1 for a
distractor), ``modality`` and ``camid``; a gallery item is a ``match`` when it has the query's
identity, else ``wrong``. Localisation items carry ``id`` (reference index), ``source``, ``x``/``y``
(projected metres) and ``thumb``; queries also ``target``, ``error_m`` (predicted vs. true position)
and ``thumb``; a candidate is a ``match`` when it is the target (largest-overlap patch), a
``neighbour`` when it overlaps the query, else ``wrong``. Localisation patches are cut from map
rasters, so their thumbnails are saved at evaluation time under ``RUN_DIR/thumbs/`` for a bounded
pool of queries (the worst ones and a seeded random sample per stage) and the candidates they list;
``thumb`` is the PNG's path relative to the run folder, or null outside the pool.

``ap`` follows :mod:`sarbridge.retrieval.metrics` (re-identification; null for queries it skips
because no gallery item matches) and :mod:`sarbridge.retrieval.geo_metrics` (localisation:
``1 / rank`` of the target, 0 when it is not in the ranked list).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarbridge.core.utils import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from sarbridge.data.records import Sample
    from sarbridge.tasks.geo.evaluate import RankedResult
    from sarbridge.tasks.geo.patches import LocalisationData

#: File name of the rankings inside a run folder.
RANKINGS_FILE = "rankings.json"
#: Folder (inside a run folder) of the localisation thumbnails.
THUMBS_DIR = "thumbs"
#: Version of the file layout.
RANKINGS_VERSION = 1
#: Gallery items kept per query.
TOP_K = 10
#: Candidate statuses, in the order the report explains them.
STATUSES = ("match", "neighbour", "wrong")

_CHUNK_PAIRS = 2**22  # query x gallery pairs per chunk (a few arrays of this size at once)


@dataclass
class QueryRankings:
    """Per-query top-k lists of one query x gallery ranking (rows follow the queries).

    Attributes:
        top_index: ``(Q, k)`` gallery indices, best first; ``-1`` pads lists shorter than ``k``
            (fewer gallery items remain after same-modality removal).
        top_score: ``(Q, k)`` the ranking score of each listed item (NaN where padded).
        first_match_rank: ``(Q,)`` 1-based rank of the first true match among the ranked gallery
            items; 0 when the query has no match.
        ap: ``(Q,)`` average precision in ``[0, 1]``; NaN for queries without a match.
        description: how the scores were computed (e.g. ``sqeuclidean distance ...``).
    """

    top_index: np.ndarray
    top_score: np.ndarray
    first_match_rank: np.ndarray
    ap: np.ndarray
    description: str = ""


def _topk_stable(key: np.ndarray, k: int, removed: np.ndarray | None) -> np.ndarray:
    """First ``k`` columns of a stable ascending argsort of every row of ``key`` (removed last).

    Uses ``argpartition`` and sorts only the ``k`` selected items; rows where the ``k``-th value
    ties with an unselected item (or is not finite) fall back to a full stable sort, so the result
    always equals ``np.argsort(row, kind="stable")[:k]`` with removed items placed after all others.
    """
    n = key.shape[1]
    work = key.astype(np.float64, copy=True)
    if removed is not None:
        work[removed] = np.inf
    if k >= n:
        ambiguous = np.ones(work.shape[0], dtype=bool)
        top = np.zeros((work.shape[0], n), dtype=np.int64)
    else:
        part = np.argpartition(work, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(work, part, axis=1)
        kth = vals.max(axis=1)
        ambiguous = ((work <= kth[:, None]).sum(axis=1) > k) | ~np.isfinite(kth)
        order = np.lexsort((part, vals), axis=-1)
        top = np.take_along_axis(part, order, axis=1)
    redo = np.flatnonzero(ambiguous)
    if redo.size:
        rows = work[redo]
        if removed is not None:
            rows[removed[redo]] = np.nan  # NaN sorts after +inf: removed items come last
        top[redo] = np.argsort(rows, axis=1, kind="stable")[:, :k]
    return top


def rank_lists(
    dist: Any,
    q_pids: Any,
    g_pids: Any,
    q_mods: Any | None = None,
    g_mods: Any | None = None,
    exclude_same_modality: bool = False,
    top_k: int = TOP_K,
    chunk_pairs: int = _CHUNK_PAIRS,
) -> QueryRankings:
    """Top-``k`` gallery items and first-match rank of every query (no AP; see :class:`QueryRankings`).

    The order is that of :func:`sarbridge.retrieval.metrics.evaluate`: ascending distance, ties
    broken by gallery index, same-modality items removed with ``exclude_same_modality``, gallery
    pid ``-1`` never matching. Works in chunks of about ``chunk_pairs`` query x gallery pairs, in
    ``O(Q G)`` time plus a sort of ``k`` items per query.

    Args:
        dist: ``(Q, G)`` distances, smaller = more similar.
        q_pids: ``(Q,)`` query identities.
        g_pids: ``(G,)`` gallery identities (``-1``: distractor).
        q_mods: ``(Q,)`` query modalities (needed with ``exclude_same_modality``).
        g_mods: ``(G,)`` gallery modalities.
        exclude_same_modality: drop gallery items of the query's modality.
        top_k: items listed per query.
        chunk_pairs: memory bound of one chunk.

    Returns:
        :class:`QueryRankings` with ``ap`` all NaN (the caller fills it from the metrics).
    """
    d = np.asarray(dist)
    num_q, num_g = d.shape
    qp = np.asarray(q_pids).reshape(-1)
    gp = np.asarray(g_pids).reshape(-1)
    if exclude_same_modality and (q_mods is None or g_mods is None):
        raise ValueError("exclude_same_modality needs q_mods and g_mods")
    qm = np.asarray(q_mods).reshape(-1) if exclude_same_modality else None
    gm = np.asarray(g_mods).reshape(-1) if exclude_same_modality else None
    k = max(0, min(int(top_k), num_g))
    top_index = np.full((num_q, int(top_k)), -1, dtype=np.int64)
    top_score = np.full((num_q, int(top_k)), np.nan, dtype=np.float64)
    first = np.zeros(num_q, dtype=np.int64)
    rows = max(1, int(chunk_pairs) // max(num_g, 1))
    cols = np.arange(num_g)[None, :]
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        dc = np.asarray(d[start:stop], dtype=np.float64)
        removed = (gm[None, :] == qm[start:stop, None]) if qm is not None and gm is not None else None
        match = (gp[None, :] == qp[start:stop, None]) & (qp[start:stop, None] != -1) & (gp[None, :] != -1)
        if removed is not None:
            match &= ~removed
        if k:
            top = _topk_stable(dc, k, removed)
            scores = np.take_along_axis(dc, top, axis=1)
            if removed is not None:
                gone = np.take_along_axis(removed, top, axis=1)
                top = np.where(gone, -1, top)
                scores = np.where(gone, np.nan, scores)
            top_index[start:stop, :k] = top
            top_score[start:stop, :k] = scores
        has = match.any(axis=1)
        dmin = np.where(match, dc, np.inf).min(axis=1)
        at_min = match & (dc == dmin[:, None])
        jstar = np.argmax(at_min, axis=1)
        before = (dc < dmin[:, None]) | ((dc == dmin[:, None]) & (cols < jstar[:, None]))
        if removed is not None:
            before &= ~removed
        first[start:stop] = np.where(has, before.sum(axis=1) + 1, 0)
    return QueryRankings(top_index, top_score, first, np.full(num_q, np.nan))


# --------------------------------------------------------------------------------------------
# JSON entries
# --------------------------------------------------------------------------------------------
def _num(x: Any, digits: int = 6) -> float | None:
    """A JSON-safe rounded float (None for NaN / inf)."""
    v = float(x)
    return round(v, digits) if math.isfinite(v) else None


def reid_status(query_pid: int, item_pid: int) -> str:
    """``match`` for a gallery item of the query's identity (never for pid -1), else ``wrong``."""
    return "match" if query_pid == item_pid and query_pid != -1 else "wrong"


def geo_status(candidate: int, target: int, near: Sequence[int]) -> str:
    """``match`` for the target reference, ``neighbour`` for an overlapping one, else ``wrong``."""
    if candidate == target:
        return "match"
    return "neighbour" if candidate in set(near) else "wrong"


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
            top.append({"item": remap[gi], "score": _num(rankings.top_score[i, j]),
                        "status": reid_status(int(q.pid), int(gallery[gi].pid))})
        fm = int(rankings.first_match_rank[i])
        entries.append({**_sample_fields(q), "ap": _num(rankings.ap[i]), "first_match_rank": fm or None,
                        "top": top})
    return {"title": title, "cmc": [float(c) for c in cmc] if cmc is not None else [],
            "num_queries": len(entries), "items": items, "queries": entries}


def geo_query_summary(
    ranked: np.ndarray, targets: np.ndarray, q_xy: np.ndarray, pred_xy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query ``(ap, first_match_rank, error_m)`` of localisation rankings.

    ``ap`` is ``1 / rank`` of the target (0 when it is not listed; the per-query term of
    :func:`~sarbridge.retrieval.geo_metrics.localisation_metrics`' mAP), ``first_match_rank``
    the 1-based rank of the target (0 when not listed) and ``error_m`` the distance between the
    predicted and the true position.
    """
    hit = np.asarray(ranked) == np.asarray(targets)[:, None]
    listed = hit.any(axis=1)
    rank = np.where(listed, hit.argmax(axis=1) + 1, 0)
    ap = np.where(listed, 1.0 / np.maximum(rank, 1), 0.0)
    err = np.hypot(pred_xy[:, 0] - q_xy[:, 0], pred_xy[:, 1] - q_xy[:, 1])
    return ap, rank.astype(np.int64), err


def cmc_from_ranks(first_match_rank: np.ndarray, length: int) -> list[float]:
    """CMC curve (fractions) of 1-based first-match ranks (0 = never): ``cmc[k-1] = P(rank <= k)``."""
    r = np.asarray(first_match_rank)
    if r.size == 0 or length <= 0:
        return []
    ks = np.arange(1, length + 1)
    ok = r > 0
    return [float(v) for v in ((r[None, :] <= ks[:, None]) & ok[None, :]).mean(axis=1)]


# --------------------------------------------------------------------------------------------
# Choosing the rows to show
# --------------------------------------------------------------------------------------------
def worst_order(queries: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the scored queries (``ap`` not null), worst first.

    Worst = lowest AP; ties by the later first match (never matched is worst), then by the larger
    localisation error, then by query order.
    """
    def key(i: int) -> tuple[float, float, float, int]:
        q = queries[i]
        fm = q.get("first_match_rank")
        err = q.get("error_m")
        return (float(q["ap"]), -(float(fm) if fm else math.inf), -(float(err) if err is not None else 0.0), i)

    return sorted((i for i, q in enumerate(queries) if q.get("ap") is not None and q.get("top")), key=key)


def select_queries(
    queries: Sequence[dict[str, Any]], samples: int, worst: int, seed: int = 0, need_thumb: bool = False,
) -> tuple[list[int], list[int]]:
    """``(sampled, worst)`` query indices to display.

    Args:
        queries: the ``queries`` list of one protocol.
        samples: number of queries drawn at random (seeded; shown in query order).
        worst: number of queries with the lowest AP (see :func:`worst_order`).
        seed: seed of the random draw.
        need_thumb: draw only queries that have a saved thumbnail (localisation).
    """
    eligible = [i for i, q in enumerate(queries) if q.get("top") and (not need_thumb or q.get("thumb"))]
    rng = np.random.default_rng(seed)
    n = min(max(samples, 0), len(eligible))
    sampled = sorted(int(eligible[j]) for j in rng.choice(len(eligible), size=n, replace=False)) if n else []
    return sampled, worst_order(queries)[: max(worst, 0)]


# --------------------------------------------------------------------------------------------
# Writing / reading
# --------------------------------------------------------------------------------------------
def write_rankings(run_dir: str | Path, task: str, protocols: dict[str, dict[str, Any]],
                   score: dict[str, Any], top_k: int = TOP_K) -> Path:
    """Write ``run_dir/rankings.json`` atomically (compact JSON); returns its path."""
    path = Path(run_dir) / RANKINGS_FILE
    payload = {"version": RANKINGS_VERSION, "task": task, "top_k": int(top_k), "score": score,
               "protocols": protocols}
    atomic_write_text(path, json.dumps(payload, separators=(",", ":")) + "\n")
    return path


def load_rankings(run_dir: str | Path) -> dict[str, Any] | None:
    """The rankings of a run folder, or None when it has none (evaluated before they existed)
    or the file is unreadable / of another layout version."""
    path = Path(run_dir) / RANKINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != RANKINGS_VERSION or not isinstance(data.get("protocols"), dict):
        return None
    return data


def write_reid_rankings(
    run_dir: str | Path,
    protocols: dict[str, tuple[Sequence[Sample], Sequence[Sample], QueryRankings]],
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
    """
    from sarbridge.viz.tables import PROTOCOL_TITLES

    if not description:
        description = next((r.description for _, _, r in protocols.values() if r.description), "distance")

    out = {name: reid_protocol_entry(PROTOCOL_TITLES.get(name, name), q, g, r, cmc.get(name))
           for name, (q, g, r) in protocols.items()}
    return write_rankings(run_dir, "reid", out,
                          {"name": "distance", "higher_is_better": False, "description": description}, top_k)


def _save_thumb(path: Path, rgb: np.ndarray, size: int) -> None:
    from PIL import Image

    im = Image.fromarray(rgb)
    if max(im.size) > size:
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))


STAGE_TITLES = {"coarse": "coarse retrieval", "refined": "+ graph refinement", "reranked": "+ re-ranking"}


def write_geo_rankings(
    run_dir: str | Path,
    results: dict[str, RankedResult],
    view: LocalisationData,
    spec: Any = None,
    top_k: int = TOP_K,
    pool_samples: int = 32,
    pool_worst: int = 16,
    thumb_size: int = 128,
) -> Path:
    """``rankings.json`` (+ ``thumbs/``) of a localisation evaluation.

    Args:
        run_dir: run folder.
        results: ``stage -> RankedResult`` (:func:`sarbridge.tasks.geo.evaluate.evaluate_localisation`).
        view: the references and queries the results index.
        spec: preprocessing spec; SAR query thumbnails are shown as the model sees them when given.
        top_k: length of the stored lists.
        pool_samples: queries per stage drawn at random (seed 0) whose thumbnails are saved.
        pool_worst: worst queries per stage whose thumbnails are saved.
        thumb_size: largest side of a saved thumbnail, in pixels.
    """
    from sarbridge.data.records import OPTICAL, SAR
    from sarbridge.viz.figures import to_display_uint8

    run = Path(run_dir)
    ref_xy = view.reference_xy()
    saved: dict[str, str | None] = {}

    def thumb(name: str, load: Any, modality: str) -> str | None:
        if name in saved:
            return saved[name]
        rel = f"{THUMBS_DIR}/{name}.png"
        try:
            pixels = load()
            rgb = spec.to_uint8(pixels, modality) if spec is not None else to_display_uint8(pixels)
            _save_thumb(run / rel, to_display_uint8(np.asarray(rgb)), thumb_size)
            saved[name] = rel
        except Exception:  # unreadable source: the report shows a placeholder
            saved[name] = None
        return saved[name]

    out: dict[str, dict[str, Any]] = {}
    for stage, res in results.items():
        qs = list(res.queries)
        targets = np.array([q.target for q in qs], dtype=np.int64)
        q_xy = view.query_xy(qs)
        ap, rank, err = geo_query_summary(res.ranked, targets, q_xy, np.asarray(res.pred_xy, dtype=np.float64))
        items: list[dict[str, Any]] = []
        remap: dict[int, int] = {}
        entries = []
        for i, q in enumerate(qs):
            top = []
            for j in range(min(top_k, res.ranked.shape[1])):
                idx = int(res.ranked[i, j])
                if idx not in remap:
                    remap[idx] = len(items)
                    ref = view.references[idx]
                    items.append({"id": idx, "source": str(ref.source), "x": _num(ref.x, 3), "y": _num(ref.y, 3),
                                  "thumb": None})
                top.append({"item": remap[idx], "score": _num(res.scores[i, j]),
                            "status": geo_status(idx, q.target, q.near),
                            "distance_m": _num(np.linalg.norm(ref_xy[idx] - q_xy[i]), 3)})
            entries.append({"id": int(q.index), "source": str(q.source), "modality": SAR, "x": _num(q.x, 3),
                            "y": _num(q.y, 3), "lon": _num(q.lon, 8), "lat": _num(q.lat, 8),
                            "target": int(q.target), "ap": _num(ap[i]), "first_match_rank": int(rank[i]) or None,
                            "error_m": _num(err[i], 3), "thumb": None, "top": top})
        sampled, worst = select_queries(entries, pool_samples, pool_worst, seed=0)
        for i in sorted(set(sampled) | set(worst)):
            q = qs[i]
            entries[i]["thumb"] = thumb(f"query_{q.index:06d}", q.load, SAR)
            for t in entries[i]["top"]:
                item = items[t["item"]]
                item["thumb"] = thumb(f"ref_{item['id']:06d}", view.references[item["id"]].load, OPTICAL)
        out[stage] = {"title": STAGE_TITLES.get(stage, stage),
                      "cmc": cmc_from_ranks(rank, int(res.ranked.shape[1])),
                      "num_queries": len(entries), "items": items, "queries": entries}
    return write_rankings(run, "geo", out, {
        "name": "similarity", "higher_is_better": True,
        "description": "cosine similarity of the L2-normalised embeddings (coarse score of each candidate; "
                       "re-ranked stage: minus the re-ranked distance)"}, top_k)


__all__ = [
    "RANKINGS_FILE", "STATUSES", "TOP_K", "QueryRankings", "cmc_from_ranks", "geo_query_summary", "geo_status",
    "load_rankings", "rank_lists", "reid_protocol_entry", "reid_status", "select_queries", "worst_order",
    "write_geo_rankings", "write_reid_rankings", "write_rankings",
]
