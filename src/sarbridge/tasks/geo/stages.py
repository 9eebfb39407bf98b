"""Which stages help: the validation choice ``geo locate`` follows, and the per-stage verdicts of the results.

A stage *helps* over the stage it builds on when it does not lower top-1 and does not raise the
median localisation error, and improves at least one of them (:func:`helps`). On the validation
queries (``geo train``, or ``geo evaluate --split val``) :func:`choose_stages` picks the retrieval
stage (``refined`` only when it helps over ``coarse``) and whether the ``registered`` stage (at the
confidence threshold :func:`calibrate_threshold` found by the same criterion) helps over it. The choice is stored in the
model bundle's ``info["stage_choice"]`` and in ``metrics.json`` (``meta.stage_choice``);
:func:`stage_verdicts` writes one line per stage for ``results.md`` and the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["RADIUS_MIN_QUERIES", "RADIUS_QUANTILE", "THRESHOLD_GRID", "calibrate_threshold", "calibrated_radius",
           "choose_stages", "helps", "radius_calibration", "stage_verdicts"]

#: Confidence thresholds tried on validation queries (``inf``: never keep a registration).
THRESHOLD_GRID = (1.0, 1.01, 1.02, 1.03, 1.05, 1.075, 1.1, 1.15, 1.2, 1.3, 1.5, 2.0, float("inf"))
#: Share of validation registrations an error radius covers (one sigma of a normal error, as GNSS "CEP68").
RADIUS_QUANTILE = 0.68
#: The validation registrations an error radius is read from: those nearest in confidence (and the
#: fewest a calibration needs). "At least as confident" was tried first and covered 34 % of the test
#: registrations of the geo demo instead of 68 %: low-confidence matches are much worse than average.
RADIUS_MIN_QUERIES = 15
#: The stage each later stage builds on, when the metrics do not say.
_BASE = {"refined": "coarse", "reranked": "coarse"}


def helps(base: dict[str, Any], stage: dict[str, Any]) -> bool:
    """Whether ``stage`` helps over ``base``: top-1 not lower, median error not higher, one of them better."""
    t0, t1 = float(base.get("top1", 0.0)), float(stage.get("top1", 0.0))
    e0, e1 = float(base.get("median_err_m", np.inf)), float(stage.get("median_err_m", np.inf))
    return t1 >= t0 - 1e-9 and e1 <= e0 + 1e-9 and (t1 > t0 + 1e-9 or e1 < e0 - 1e-9)


def calibrate_threshold(score: Callable[[float], dict[str, Any]], base: dict[str, Any] | None = None,
                        grid: Sequence[float] = THRESHOLD_GRID) -> tuple[float, list[dict[str, Any]]]:
    """The confidence threshold with the lowest median error among those that keep top-1 at least at
    ``base``'s (ties: higher success within 10 m, then the higher threshold).

    This is the criterion :func:`helps` judges the stage by, so the threshold chosen on validation
    and the decision to use the stage agree (``inf``, keep no registration, is the base itself).

    Args:
        score: ``threshold -> metrics`` of the registered stage on validation queries.
        base: metrics of the stage registration builds on (``top1``); None: no top-1 condition.
        grid: thresholds to try.

    Returns:
        ``(threshold, table)``: the chosen threshold and one row per tried threshold
        (``threshold``, ``kept`` percent, ``top1``, ``succ_10m``, ``median_err_m``).
    """
    floor = float(base.get("top1", 0.0)) - 1e-9 if base else -np.inf
    table, best, best_key = [], float(grid[-1]), (np.inf, np.inf, np.inf)
    for t in grid:
        m = score(float(t))
        row = {"threshold": float(t), "kept": float(m.get("kept", 0.0)), "top1": float(m.get("top1", 0.0)),
               "succ_10m": float(m.get("succ_10m", 0.0)), "median_err_m": float(m.get("median_err_m", np.inf))}
        table.append(row)
        key = (row["median_err_m"], -row["succ_10m"], -float(t))
        if row["top1"] >= floor and key < best_key:
            best, best_key = float(t), key
    return best, table


def choose_stages(metrics: dict[str, Any], threshold: float | None = None, split: str = "val") -> dict[str, Any]:
    """The stages validation chooses for ``geo locate``.

    Args:
        metrics: ``stage -> metrics`` on the validation queries (``coarse``, ``refined``?,
            ``registered``? computed on the chosen retrieval stage's candidates).
        threshold: the registration threshold those ``registered`` metrics used.
        split: the split the metrics come from (recorded).

    Returns:
        ``{"retrieval": "coarse"|"refined", "register": bool, "threshold": float|None, "split",
        "queries", "reason"}``.
    """
    coarse, refined = metrics.get("coarse") or {}, metrics.get("refined")
    retrieval = "refined" if isinstance(refined, dict) and helps(coarse, refined) else "coarse"
    reasons = []
    if isinstance(refined, dict):
        reasons.append(f"graph refinement {'helps' if retrieval == 'refined' else 'does not help'} "
                       f"(top-1 {coarse.get('top1', 0):.1f} -> {refined.get('top1', 0):.1f} %, median "
                       f"{coarse.get('median_err_m', 0):.1f} -> {refined.get('median_err_m', 0):.1f} m)")
    reg = metrics.get("registered")
    use_reg = isinstance(reg, dict) and threshold is not None and np.isfinite(threshold) \
        and helps(metrics.get(retrieval) or coarse, reg)
    if isinstance(reg, dict):
        base = metrics.get(retrieval) or coarse
        reasons.append(f"registration {'helps' if use_reg else 'does not help'} (median "
                       f"{base.get('median_err_m', 0):.1f} -> {reg.get('median_err_m', 0):.1f} m, succ@10 m "
                       f"{base.get('succ_10m', 0):.1f} -> {reg.get('succ_10m', 0):.1f} %, threshold {threshold})")
    return {"retrieval": retrieval, "register": bool(use_reg),
            "threshold": float(threshold) if threshold is not None and np.isfinite(threshold) else None,
            "split": split, "queries": int(coarse.get("queries", 0)), "reason": "; ".join(reasons)}


def _line(title: str, base_title: str, base: dict[str, Any], m: dict[str, Any]) -> str:
    worse = [k for k in ("succ_10m", "succ_50m") if k in m and k in base and m[k] < base[k]]
    verdict = "did NOT help" if not helps(base, m) else \
        f"helped only partly (lower {' and '.join(worse)})" if worse else "helped"
    parts = [f"top-1 {base.get('top1', 0):.1f} -> {m.get('top1', 0):.1f} %",
             f"median error {base.get('median_err_m', 0):.1f} -> {m.get('median_err_m', 0):.1f} m"]
    if "succ_10m" in m and "succ_10m" in base:
        parts.append(f"succ@10 m {base['succ_10m']:.1f} -> {m['succ_10m']:.1f} %")
    if "succ_50m" in m and "succ_50m" in base:
        parts.append(f"succ@50 m {base['succ_50m']:.1f} -> {m['succ_50m']:.1f} %")
    return f"{title} {verdict} over {base_title} on these queries: {', '.join(parts)}."


def stage_verdicts(metrics: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """One sentence per later stage: whether it helped over the stage it builds on, with the figures.

    Args:
        metrics: ``metrics.json`` content (``meta.register_base`` names the registered stage's base).
        titles: display titles of the stages.

    Returns:
        The sentences, in stage order (empty when there is only the coarse stage).
    """
    meta = metrics.get("meta") if isinstance(metrics.get("meta"), dict) else {}
    bases = {**_BASE, "registered": str((meta or {}).get("register_base", "coarse"))}
    out = []
    for stage, base in bases.items():
        m, b = metrics.get(stage), metrics.get(base)
        if isinstance(m, dict) and isinstance(b, dict):
            out.append(_line(titles.get(stage, stage).lstrip("+ ").capitalize(), titles.get(base, base).lstrip("+ "),
                             b, m))
    return out


def radius_calibration(confidence: np.ndarray, error_m: np.ndarray) -> dict[str, Any] | None:
    """The validation registrations an error radius is calibrated from (kept ones only).

    Args:
        confidence: ``(n,)`` confidence of each kept validation registration.
        error_m: ``(n,)`` its error in metres.

    Returns:
        ``{"confidence", "error_m", "quantile", "min_queries"}`` (lists sorted by decreasing
        confidence), or None when there are fewer than :data:`RADIUS_MIN_QUERIES` registrations.
    """
    c, e = np.asarray(confidence, dtype=np.float64), np.asarray(error_m, dtype=np.float64)
    ok = np.isfinite(c) & np.isfinite(e)
    if int(ok.sum()) < RADIUS_MIN_QUERIES:
        return None
    order = np.argsort(-c[ok], kind="stable")
    return {"confidence": [round(float(v), 6) for v in c[ok][order]], "error_m": [round(float(v), 3) for v in e[ok][order]],
            "quantile": RADIUS_QUANTILE, "min_queries": RADIUS_MIN_QUERIES}


def calibrated_radius(calibration: dict[str, Any] | None, confidence: float, floor: float = 0.0) -> float | None:
    """Error radius of a registration with ``confidence``: the :data:`RADIUS_QUANTILE` quantile of the
    errors of the ``min_queries`` validation registrations nearest to it in confidence (ties: the more
    confident first), at least ``floor`` (e.g. one map pixel).

    Returns:
        The radius in metres, or None without a calibration.
    """
    if not calibration or not calibration.get("error_m"):
        return None
    conf = np.asarray(calibration["confidence"], dtype=np.float64)  # decreasing
    err = np.asarray(calibration["error_m"], dtype=np.float64)
    k = min(int(calibration.get("min_queries", RADIUS_MIN_QUERIES)), len(err))
    nearest = np.argsort(np.abs(conf - float(confidence)), kind="stable")[:k]
    return max(float(floor), float(np.quantile(err[nearest], float(calibration.get("quantile", RADIUS_QUANTILE)))))
