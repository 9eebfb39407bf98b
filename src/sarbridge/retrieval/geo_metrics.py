"""Localisation metrics of a cross-view retrieval: recall@k, mAP and metric position errors.

Each query (e.g. a SAR patch) has a ranked list of reference indices (e.g. map tiles), best first,
a ground-truth ``target`` reference and a true position. The metrics are

* ``top<k>`` -- percent of queries whose target is among the first ``k`` ranked references.
  When the lists are shorter than ``k`` (``K < k``) only the ``K`` ranked references count,
  i.e. ``top<k> == top<K>``; the key is still reported.
* ``mAP`` -- percent; mean over queries of the average precision of the query's relevant set
  ``R`` (default ``{target}``) over its ranked list: with ``r_1 < r_2 < ... < r_h`` the 1-based
  ranks of the relevant references found in the list, ``AP = (1 / |R|) sum_i i / r_i``. A
  relevant reference missing from a truncated list contributes 0.
* ``mean_err_m`` / ``median_err_m`` -- position error (metres) between the predicted position
  (default: the position of the top-1 reference) and the true query position: Euclidean for
  projected ``(x, y)`` coordinates in metres, great-circle (:func:`haversine_m`) with
  ``lonlat=True``.
* ``succ_<t>m`` -- percent of queries with error ``<= t`` metres.
* ``queries`` -- number of queries.

All percentages are Python floats in ``[0, 100]``.

:func:`cmpc_metrics` adds the figures as CMPC's evaluation (``test.py`` of Li et al. 2023,
github.com/Collebt/CMPC) defines them, under ``cmpc_`` names so they are not mistaken for ours:

* ``cmpc_map_mrr`` -- what CMPC prints as "mAP": the mean over queries of ``1 / rank`` of the
  single match (a mean reciprocal rank, percent). With one relevant reference it equals our
  ``mAP``; it is *not* an average precision over near-misses.
* ``cmpc_err_mean`` -- mean of ``sqrt(sum((pred_pos - gt_pos) ** 2))`` in the units of the
  positions, ``pred_pos`` being the position of the top-1 reference (CMPC takes the top-1 of the
  refined list after refinement, never a centroid).
* ``cmpc_success_curve`` / ``cmpc_success_thresholds`` -- percent of queries with error
  ``<= t`` for ``t`` in ``linspace(0, max_err, 20)``; CMPC's ``test.py`` calls its curve with
  ``max_meter=200`` (its function default is 40).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from sarbridge.retrieval.distance import RetrievalInputError, to_numpy

__all__ = [
    "CMPC_CURVE_POINTS", "CMPC_MAX_ERR", "EARTH_RADIUS_M", "cmpc_metrics", "haversine_m", "localisation_metrics",
    "localisation_summary",
]

#: Mean Earth radius (IUGG, metres) used by :func:`haversine_m`.
EARTH_RADIUS_M: Final[float] = 6_371_008.8
#: Largest threshold of CMPC's success curve as its ``test.py`` calls it (``max_meter=200``).
CMPC_MAX_ERR: Final[float] = 200.0
#: Points of CMPC's success curve (``torch.linspace(0, max_meter, 20)``).
CMPC_CURVE_POINTS: Final[int] = 20


def haversine_m(
    lon1: Any, lat1: Any, lon2: Any, lat2: Any, radius_m: float = EARTH_RADIUS_M
) -> np.ndarray | float:
    """Great-circle distance in metres between points given in degrees (vectorised).

    Uses the haversine formula on a sphere of radius ``radius_m`` (0.5 % error at most against
    the WGS84 ellipsoid). Inputs broadcast against each other like numpy arrays; NaN propagates.

    Args:
        lon1, lat1: longitude / latitude of the first point(s), degrees.
        lon2, lat2: longitude / latitude of the second point(s), degrees.
        radius_m: sphere radius.

    Returns:
        A float64 array of the broadcast shape, or a Python float when every input is a scalar.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) a latitude outside ``[-90, 90]`` (often
            swapped longitude / latitude).
    """
    lo1, la1, lo2, la2 = (np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2))
    for name, lat in (("lat1", la1), ("lat2", la2)):
        if (np.abs(lat) > 90.0).any():
            raise RetrievalInputError(
                f"{name} has a latitude outside [-90, 90] degrees ({float(np.nanmax(np.abs(lat))):g})",
                "pass longitude first and latitude second, in degrees",
            )
    phi1, phi2 = np.radians(la1), np.radians(la2)
    dphi = phi2 - phi1
    dlmb = np.radians(lo2 - lo1)
    h = np.sin(dphi / 2.0) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2.0) ** 2
    out = 2.0 * radius_m * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return float(out) if out.ndim == 0 else out


def _coords(x: Any, name: str, rows: int | None) -> np.ndarray:
    """Validate a ``(rows, 2)`` finite coordinate array; returns float64."""
    a = to_numpy(x, name)
    if a.ndim != 2 or a.shape[1] != 2:
        raise RetrievalInputError(f"{name} must have shape (num_points, 2), got {a.shape}")
    if a.dtype.kind not in "fiu":
        raise RetrievalInputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if rows is not None and a.shape[0] != rows:
        raise RetrievalInputError(f"{name} has {a.shape[0]} rows, expected {rows} (one per query)")
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        what = "NaN" if np.isnan(a[bad]).any() else "infinite"
        raise RetrievalInputError(
            f"{name} has {what} coordinates in {int(bad.sum())} row(s) (first: row {first})",
            "drop or fix points without a known position",
        )
    return a


def _indices(x: Any, name: str, num_ref: int) -> np.ndarray:
    """Validate integer reference indices in ``[0, num_ref)``; returns int64."""
    a = to_numpy(x, name)
    if a.dtype.kind not in "iu":
        raise RetrievalInputError(f"{name} must hold integer reference indices, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if a.size and (a.min() < 0 or a.max() >= num_ref):
        bad = int(a[(a < 0) | (a >= num_ref)].flat[0])
        raise RetrievalInputError(
            f"{name} holds reference index {bad}, outside [0, {num_ref}) for {num_ref} references"
        )
    return a


def _threshold_key(t: float) -> str:
    return f"succ_{int(t)}m" if float(t).is_integer() else f"succ_{t:g}m"


def localisation_metrics(
    ranked: Any,
    targets: Any,
    ref_xy: Any,
    query_xy: Any,
    pred_xy: Any | None = None,
    topk: Sequence[int] = (1, 5, 10, 20),
    success_m: Sequence[float] = (50, 100, 150, 200),
    relevant: Sequence[set[int]] | None = None,
    lonlat: bool = False,
) -> dict[str, float | int]:
    """Top-k accuracy, mAP and position errors of ranked reference lists (module docstring).

    Args:
        ranked: ``(M, K)`` integer reference indices per query, best first, no repeats in a row.
        targets: ``(M,)`` ground-truth reference index of every query.
        ref_xy: ``(N, 2)`` reference positions (projected metres, or lon/lat with ``lonlat``).
        query_xy: ``(M, 2)`` true query positions.
        pred_xy: ``(M, 2)`` predicted query positions; default ``ref_xy[ranked[:, 0]]``.
        topk: ranks ``k`` reported as ``top<k>``.
        success_m: error thresholds (metres) reported as ``succ_<t>m``.
        relevant: per query, the set of references counted as correct for mAP (e.g. the target
            and its overlapping neighbours); default ``{target}``. Sets must be non-empty.
        lonlat: coordinates are ``(longitude, latitude)`` degrees; errors use
            :func:`haversine_m`.

    Returns:
        ``{"top1", "top5", ..., "mAP", "mean_err_m", "median_err_m", "succ_50m", ...,
        "queries"}``: percentages and metres as Python floats, ``queries`` an int.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) no queries or empty lists, mismatched
            lengths, non-integer or out-of-range indices, repeated references in a row, NaN /
            infinite coordinates, empty relevant sets, or bad ``topk`` / ``success_m``.
    """
    ref = _coords(ref_xy, "ref_xy", None)
    num_ref = ref.shape[0]
    r = _indices(ranked, "ranked", num_ref)
    if r.ndim != 2:
        raise RetrievalInputError(f"ranked must be a 2-D (num_queries, K) array, got shape {r.shape}")
    m, k_list = r.shape
    if m == 0:
        raise RetrievalInputError("no queries to evaluate (ranked has 0 rows)")
    if k_list == 0:
        raise RetrievalInputError("ranked lists are empty (ranked has 0 columns)")
    t = _indices(targets, "targets", num_ref)
    if t.shape != (m,):
        raise RetrievalInputError(f"targets must have shape ({m},) (one per ranked row), got {t.shape}")
    q_xy = _coords(query_xy, "query_xy", m)
    p_xy = ref[r[:, 0]] if pred_xy is None else _coords(pred_xy, "pred_xy", m)
    _check_keys(topk, success_m)
    if k_list > 1:
        srt = np.sort(r, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        if dup.any():
            row = int(np.flatnonzero(dup)[0])
            raise RetrievalInputError(f"ranked row {row} lists a reference more than once")

    # Relevance matrix in rank order: hit[i, j] <=> ranked[i, j] is relevant to query i.
    if relevant is None:
        hit = r == t[:, None]
        n_rel = np.ones(m, dtype=np.float64)
    else:
        if len(relevant) != m:
            raise RetrievalInputError(f"relevant has {len(relevant)} entries, expected {m} (one per query)")
        sizes = np.array([len(s) for s in relevant], dtype=np.int64)
        if (sizes == 0).any():
            raise RetrievalInputError(f"relevant[{int(np.flatnonzero(sizes == 0)[0])}] is empty")
        rel = _indices(np.fromiter((int(x) for s in relevant for x in s), dtype=np.int64,
                                   count=int(sizes.sum())), "relevant", num_ref)
        owner = np.repeat(np.arange(m, dtype=np.int64), sizes)
        keys = np.unique(owner * num_ref + rel)  # also removes repeats within a set
        n_rel = np.bincount(keys // num_ref, minlength=m).astype(np.float64)
        hit = np.isin(np.arange(m, dtype=np.int64)[:, None] * num_ref + r, keys)

    target_hit = r == t[:, None]
    rank = np.where(target_hit.any(axis=1), target_hit.argmax(axis=1) + 1, 0)
    found = np.cumsum(hit, axis=1)  # i for the i-th relevant item found
    ranks = np.arange(1, k_list + 1, dtype=np.float64)[None, :]
    ap = np.where(hit, found / ranks, 0.0).sum(axis=1) / n_rel
    return _summary(rank, ap, p_xy, q_xy, topk, success_m, lonlat)


def _check_keys(topk: Sequence[int], success_m: Sequence[float]) -> None:
    """Validate the ``top<k>`` ranks and the ``succ_<t>m`` thresholds."""
    for k in topk:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise RetrievalInputError(f"topk entries must be positive integers, got {k!r}")
    for thr in success_m:
        if isinstance(thr, bool) or not isinstance(thr, (int, float, np.integer, np.floating)) \
                or not np.isfinite(thr) or thr < 0:
            raise RetrievalInputError(f"success_m entries must be non-negative numbers, got {thr!r}")


def _summary(rank: np.ndarray, ap: np.ndarray, p_xy: np.ndarray, q_xy: np.ndarray, topk: Sequence[int],
             success_m: Sequence[float], lonlat: bool) -> dict[str, float | int]:
    """The metrics dict from per-query target ranks (0: not found), APs and predicted positions."""
    out: dict[str, float | int] = {}
    for k in topk:
        out[f"top{int(k)}"] = float(np.mean((rank > 0) & (rank <= int(k))) * 100.0)
    out["mAP"] = float(ap.mean() * 100.0)
    if lonlat:
        err = np.asarray(haversine_m(p_xy[:, 0], p_xy[:, 1], q_xy[:, 0], q_xy[:, 1]), dtype=np.float64)
    else:
        err = np.hypot(p_xy[:, 0] - q_xy[:, 0], p_xy[:, 1] - q_xy[:, 1])
    out["mean_err_m"] = float(err.mean())
    out["median_err_m"] = float(np.median(err))
    for thr in success_m:
        out[_threshold_key(thr)] = float(np.mean(err <= thr) * 100.0)
    out["queries"] = int(rank.shape[0])
    return out


def localisation_summary(
    target_rank: Any, ap: Any, top1: Any, ref_xy: Any, query_xy: Any, pred_xy: Any | None = None,
    topk: Sequence[int] = (1, 5, 10, 20), success_m: Sequence[float] = (50, 100, 150, 200), lonlat: bool = False,
) -> dict[str, float | int]:
    """:func:`localisation_metrics`' dict from per-query results instead of ranked lists.

    Args:
        target_rank: ``(M,)`` 1-based rank of every query's target (0: not ranked).
        ap: ``(M,)`` average precision of every query's relevant set (fraction).
        top1: ``(M,)`` index of every query's first-ranked reference (the default prediction).
        ref_xy, query_xy, pred_xy, topk, success_m, lonlat: as :func:`localisation_metrics`.

    Returns:
        As :func:`localisation_metrics`.
    """
    ref = _coords(ref_xy, "ref_xy", None)
    rank = np.asarray(target_rank, dtype=np.int64).reshape(-1)
    m = rank.shape[0]
    if m == 0:
        raise RetrievalInputError("no queries to evaluate")
    q_xy = _coords(query_xy, "query_xy", m)
    p_xy = ref[_indices(top1, "top1", ref.shape[0])] if pred_xy is None else _coords(pred_xy, "pred_xy", m)
    _check_keys(topk, success_m)
    return _summary(rank, np.asarray(ap, dtype=np.float64), p_xy, q_xy, topk, success_m, lonlat)


def cmpc_metrics(
    ranked: Any,
    targets: Any,
    ref_xy: Any,
    query_xy: Any,
    target_rank: Any | None = None,
    max_err: float = CMPC_MAX_ERR,
    points: int = CMPC_CURVE_POINTS,
) -> dict[str, Any]:
    """CMPC's retrieval and localisation figures (module docstring), percent and position units.

    Args:
        ranked: ``(M, K)`` integer reference indices per query, best first.
        targets: ``(M,)`` index of each query's single match.
        ref_xy: ``(N, 2)`` reference positions.
        query_xy: ``(M, 2)`` true query positions (same units).
        target_rank: optional ``(M,)`` 1-based rank of the match among *all* references, used
            where the match is missing from a truncated list (CMPC ranks every reference);
            without it such a query adds 0 to ``cmpc_map_mrr``.
        max_err: largest threshold of the success curve.
        points: number of thresholds (``linspace(0, max_err, points)``).

    Returns:
        ``{"cmpc_map_mrr", "cmpc_err_mean", "cmpc_success_curve", "cmpc_success_thresholds",
        "cmpc_mrr_exact"}``; ``cmpc_mrr_exact`` is False when some match lay beyond the list and
        no ``target_rank`` was given.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) malformed inputs (as
            :func:`localisation_metrics`), or ``points < 2`` / a negative ``max_err``.
    """
    ref = _coords(ref_xy, "ref_xy", None)
    r = _indices(ranked, "ranked", ref.shape[0])
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise RetrievalInputError(f"ranked must be a non-empty 2-D (num_queries, K) array, got shape {r.shape}")
    m = r.shape[0]
    t = _indices(targets, "targets", ref.shape[0])
    if t.shape != (m,):
        raise RetrievalInputError(f"targets must have shape ({m},) (one per ranked row), got {t.shape}")
    q_xy = _coords(query_xy, "query_xy", m)
    if int(points) < 2 or not np.isfinite(max_err) or max_err < 0:
        raise RetrievalInputError(f"the success curve needs points >= 2 and max_err >= 0, got {points}, {max_err}")
    hit = r == t[:, None]
    in_list = hit.any(axis=1)
    rank = np.where(in_list, hit.argmax(axis=1) + 1, 0).astype(np.float64)
    exact = bool(in_list.all())
    if target_rank is not None:
        full = to_numpy(target_rank, "target_rank").astype(np.float64).reshape(-1)
        if full.shape != (m,) or (full < 1).any():
            raise RetrievalInputError(f"target_rank must hold {m} ranks >= 1")
        rank = np.where(in_list, rank, full)
        exact = True
    rr = np.where(rank > 0, 1.0 / np.maximum(rank, 1.0), 0.0)
    err = np.sqrt(((ref[r[:, 0]] - q_xy) ** 2).sum(axis=1))
    thresholds = np.linspace(0.0, float(max_err), int(points))
    curve = [(err <= th).mean() * 100.0 for th in thresholds]
    return {"cmpc_map_mrr": float(rr.mean() * 100.0), "cmpc_err_mean": float(err.mean()),
            "cmpc_success_curve": [float(c) for c in curve],
            "cmpc_success_thresholds": [float(th) for th in thresholds], "cmpc_mrr_exact": exact}
