"""The ``registered`` stage of an evaluation, the threshold fallback, re-ordering and the validation choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import GEO_CRS, GEO_ORIGIN
from sarbridge.data.georaster import read_georaster, write_georaster
from sarbridge.tasks.geo.config import RegisterConfig
from sarbridge.tasks.geo.evaluate import RankedResult, metrics_of, registered_result
from sarbridge.tasks.geo.queries import build_map_localisation
from sarbridge.tasks.geo.registered import add_registered_stage
from sarbridge.tasks.geo.results import localisation_table, stage_lines
from sarbridge.tasks.geo.stages import calibrate_threshold, choose_stages, helps, stage_verdicts


def textured_scene(folder: Path, size: int = 160, seed: int = 0) -> Path:
    """Optical map with fine structure and a co-registered SAR rendering of it (linear, mild speckle)."""
    rng = np.random.default_rng(seed)
    base = rng.random((size // 4 + 1, size // 4 + 1))
    lum = np.kron(base, np.ones((4, 4)))[:size, :size]
    lum = 0.6 * lum + 0.4 * rng.random((size, size))
    rgb = np.stack([lum * 200 + 20] * 3).astype(np.uint8)
    sar = ((lum + 0.05) ** 2 * rng.gamma(16.0, 1 / 16.0, size=lum.shape)).astype(np.float32)[None]
    t = (0.5, 0.0, GEO_ORIGIN[0], 0.0, -0.5, GEO_ORIGIN[1])
    folder.mkdir(parents=True, exist_ok=True)
    write_georaster(folder / "optical.tif", rgb, t, GEO_CRS)
    write_georaster(folder / "sar.tif", sar, t, GEO_CRS)
    return folder


def oracle_coarse(data, queries) -> RankedResult:
    """A hand-made retrieval: the target cell first, then its overlapping neighbours, then the rest."""
    n = len(data.references)
    ranked = []
    for q in queries:
        head = [q.target, *q.near]
        ranked.append(head + [i for i in range(n) if i not in head])
    ranked_arr = np.array(ranked, dtype=np.int64)[:, :10]
    scores = np.tile(np.linspace(1.0, 0.5, ranked_arr.shape[1]), (len(queries), 1))
    return RankedResult(list(queries), ranked_arr, scores, data.reference_xy()[ranked_arr[:, 0]])


def _oracle_stage(tmp_path: Path, count: int):  # noqa: ANN202 - (data, queries, coarse, metrics)
    """``count`` arbitrary-offset queries of a textured scene with the oracle retrieval as the coarse stage."""
    scene = textured_scene(tmp_path / "scene")
    data = build_map_localisation(read_georaster(scene / "optical.tif"), read_georaster(scene / "sar.tif"),
                                  patch_size=32, setting="arbitrary", count=count, seed=3)
    coarse = oracle_coarse(data, data.queries)
    return data, data.queries, coarse, {"coarse": metrics_of(coarse, data)}


def test_registered_stage_finds_the_metre_level_position(tmp_path: Path) -> None:
    """Queries at arbitrary offsets: the target cell's centre is metres off, the registration ~0."""
    data, queries, coarse, metrics = _oracle_stage(tmp_path, 12)
    results = {"coarse": coarse}
    out = add_registered_stage(metrics, results, data, queries, RegisterConfig(top_k=2, coarse=1), "cpu",
                               None, None, None)
    assert out is not None
    reg, c = metrics["registered"], metrics["coarse"]
    for key in ("top1", "median_err_m", "p90_err_m", "succ_5m", "succ_10m", "succ_25m", "succ_50m", "kept",
                "top1_reordered", "top1_base"):
        assert key in reg, key
    assert c["top1"] == 100.0 and c["median_err_m"] > 2.0  # arbitrary offsets: the cell centre is metres off
    assert reg["median_err_m"] < 0.5 and reg["succ_5m"] == 100.0 and reg["kept"] == 100.0
    assert reg["top1"] == c["top1"]  # re-ordering by overlap with the registered box keeps the target first
    assert metrics["meta"]["register_base"] == "coarse"
    assert metrics["meta"]["registration"]["threshold_source"].startswith("default")
    assert "| + registration (metre-level, in the map) |" in localisation_table(metrics)
    assert "succ_5m" in localisation_table(metrics).splitlines()[0]


def test_registered_stage_says_why_it_is_missing(tmp_path: Path) -> None:
    scene = textured_scene(tmp_path / "scene", size=96)
    data = build_map_localisation(read_georaster(scene / "optical.tif"), read_georaster(scene / "sar.tif"),
                                  patch_size=32, setting="aligned")
    data.meta["map"] = None
    coarse = oracle_coarse(data, data.queries)
    metrics = {"coarse": metrics_of(coarse, data)}
    assert add_registered_stage(metrics, {"coarse": coarse}, data, data.queries, RegisterConfig(), "cpu",
                                None, None, None) is None
    assert "registered" not in metrics and metrics["meta"]["registration"].startswith("not computed")


def _base() -> RankedResult:
    ranked = np.array([[0, 1, 2, 3], [1, 0, 2, 3]])
    return RankedResult([], ranked, np.array([[0.9, 0.8, 0.7, 0.6]] * 2), np.array([[0.0, 0.0], [10.0, 10.0]]))


def test_threshold_fallback_keeps_the_retrieval_position() -> None:
    xy = np.array([[1.0, 2.0], [11.0, 12.0]])
    costs = np.array([[0.5, 0.1, 0.3], [0.2, 0.1, 0.4]])
    res = registered_result(_base(), xy, np.array([1.2, 1.01]), costs, threshold=1.05)
    assert res.extra["registered"].tolist() == [True, False]
    assert res.pred_xy.tolist() == [[1.0, 2.0], [10.0, 10.0]]  # the second keeps the retrieval position
    none = registered_result(_base(), xy, np.array([1.2, 1.01]), costs, threshold=float("inf"))
    assert none.pred_xy.tolist() == _base().pred_xy.tolist()


def test_reordering_by_registration_cost_on_and_off() -> None:
    xy = np.zeros((2, 2))
    costs = np.array([[0.5, 0.1, 0.3], [0.2, 0.1, 0.4]])
    conf = np.array([1.2, 1.01])
    off = registered_result(_base(), xy, conf, costs, threshold=1.05, rerank=False)
    assert off.ranked.tolist() == _base().ranked.tolist()
    on = registered_result(_base(), xy, conf, costs, threshold=1.05, rerank=True)
    # kept row: candidates by cost 0.1, 0.3, 0.5 -> [1, 2, 0], the tail unchanged; the unkept row unchanged
    assert on.ranked.tolist() == [[1, 2, 0, 3], [1, 0, 2, 3]]
    assert on.scores[0].tolist() == [0.8, 0.7, 0.9, 0.6]  # the scores follow their candidates


def test_reordering_by_overlap_with_the_registered_box() -> None:
    # four 10 m cells in a row: 0 [0,10], 1 [10,20], 2 [20,30], 3 [30,40] (y 0..10)
    fp = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10]], dtype=float)
    costs = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])  # cost alone would keep the order
    # query 0 registered at x=23 (box 18..28): overlaps cell 2 by 8 m, cell 1 by 2 m, cell 0 not
    # query 1 registered at x=20.05 (box 15.05..25.05): cells 1 and 2 overlap by 49.5 and 50.5 m2, a near-tie
    # (within 2 % of a cell) kept in retrieval order (row 1 ranks 1 before 2); cell 0 does not overlap
    xy = np.array([[23.0, 5.0], [20.05, 5.0]])
    res = registered_result(_base(), xy, np.array([1.2, 1.2]), costs, threshold=1.05, rerank=True, footprints=fp)
    assert res.ranked.tolist() == [[2, 1, 0, 3], [1, 2, 0, 3]]
    assert res.scores[0].tolist() == [0.7, 0.8, 0.9, 0.6]
    low = registered_result(_base(), xy, np.array([1.0, 1.0]), costs, threshold=1.05, rerank=True, footprints=fp)
    assert low.ranked.tolist() == _base().ranked.tolist()  # unkept registrations keep the retrieval order


def test_choice_uses_coarse_when_refinement_hurts_on_validation() -> None:
    coarse = {"top1": 21.7, "median_err_m": 172.0, "succ_10m": 0.0, "succ_50m": 25.4, "queries": 80}
    worse = {"top1": 21.2, "median_err_m": 180.0, "succ_10m": 0.0, "succ_50m": 14.2}
    better = {"top1": 22.0, "median_err_m": 150.0, "succ_10m": 0.0, "succ_50m": 30.0}
    reg = {"top1": 21.7, "median_err_m": 12.0, "succ_10m": 40.0, "succ_50m": 60.0}
    assert not helps(coarse, worse) and helps(coarse, better) and not helps(coarse, coarse)
    c = choose_stages({"coarse": coarse, "refined": worse, "registered": reg}, threshold=1.1)
    assert c["retrieval"] == "coarse" and c["register"] and c["threshold"] == 1.1
    assert "does not help" in c["reason"]
    assert choose_stages({"coarse": coarse, "refined": better})["retrieval"] == "refined"
    no_reg = choose_stages({"coarse": coarse, "registered": {**coarse}}, threshold=float("inf"))
    assert not no_reg["register"] and no_reg["threshold"] is None
    metrics = {"coarse": coarse, "refined": worse, "meta": {"stage_choice": c}}
    lines = stage_verdicts(metrics, {"coarse": "coarse retrieval", "refined": "+ graph refinement"})
    assert lines == ["Graph refinement did NOT help over coarse retrieval on these queries: top-1 21.7 -> 21.2 %, "
                     "median error 172.0 -> 180.0 m, succ@10 m 0.0 -> 0.0 %, succ@50 m 25.4 -> 14.2 %."]
    assert any(line.startswith("geo locate uses coarse retrieval + registration") for line in stage_lines(metrics))


def test_threshold_calibration_maximises_success_within_10_m() -> None:
    table = {1.0: (30.0, 20.0), 1.05: (45.0, 15.0), 1.1: (45.0, 12.0), 1.2: (40.0, 30.0)}

    def score(t: float) -> dict:
        s, med = table.get(t, (0.0, 99.0))
        return {"succ_10m": s, "median_err_m": med, "kept": 50.0}

    best, rows = calibrate_threshold(score, grid=(1.0, 1.05, 1.1, 1.2))
    assert best == pytest.approx(1.1) and [r["threshold"] for r in rows] == [1.0, 1.05, 1.1, 1.2]


def _naive_radius(conf: np.ndarray, err: np.ndarray, c: float, q: float = 0.68, k: int = 15) -> float:
    """Reference: the q-quantile of the errors of the k validation registrations nearest to c in confidence."""
    pairs = sorted(zip(conf.tolist(), err.tolist()), key=lambda p: -p[0])  # ties: the more confident first
    nearest = sorted(range(len(pairs)), key=lambda i: (abs(pairs[i][0] - c), i))[:k]
    return float(np.quantile([pairs[i][1] for i in nearest], q))


def test_error_radius_is_a_quantile_of_the_nearest_validation_errors() -> None:
    from sarbridge.tasks.geo.stages import calibrated_radius, radius_calibration

    assert radius_calibration(np.ones(14), np.ones(14)) is None  # too few to calibrate from
    assert calibrated_radius(None, 1.2) is None
    # hand-computed: 30 registrations; the 15 most confident are within 1 m, the 15 others 100 m off
    conf = np.concatenate([np.linspace(1.5, 1.2, 15), np.linspace(1.1, 1.0, 15)])
    err = np.concatenate([np.full(15, 0.5), np.full(15, 100.0)])
    err[::2] += 0.5  # 1.0 and 0.5 m, 100.5 and 100 m
    cal = radius_calibration(conf, err)
    assert cal is not None and cal["confidence"] == pytest.approx(sorted(conf.tolist(), reverse=True), abs=1e-6)
    assert calibrated_radius(cal, 2.0) == pytest.approx(np.quantile(err[:15], 0.68))  # within 1 m
    assert calibrated_radius(cal, 0.9) == pytest.approx(np.quantile(err[15:], 0.68))  # about 100 m
    rng = np.random.default_rng(0)
    conf, err = 1.0 + rng.random(200), rng.exponential(20.0, 200)
    err[conf > 1.6] /= 20.0  # confident registrations are better
    cal = radius_calibration(np.append(conf, np.nan), np.append(err, 1.0))  # a NaN pair is left out
    for c in (0.5, 1.1, 1.5, 1.7, 1.95, 3.0):
        assert calibrated_radius(cal, c) == pytest.approx(_naive_radius(conf, err, c), abs=1e-3)  # stored to 1 mm
    assert calibrated_radius(cal, 1.8) < calibrated_radius(cal, 1.2)  # more confident: a smaller radius


def test_validation_choice_records_the_radius_and_evaluation_reports_its_coverage(tmp_path: Path) -> None:
    data, queries, coarse, metrics = _oracle_stage(tmp_path, 20)
    assert add_registered_stage(metrics, {"coarse": coarse}, data, queries, RegisterConfig(top_k=2, coarse=1), "cpu",
                                None, None, None, choose=True) is not None
    choice = metrics["meta"]["stage_choice"]
    radius = choice["radius"]
    assert radius is not None and len(radius["error_m"]) == round(metrics["registered"]["kept"] * 20 / 100)
    reg = metrics["registered"]
    assert 60.0 <= reg["radius_coverage"] <= 100.0 and reg["median_radius_m"] == pytest.approx(0.5)  # one pixel: near-exact
    assert any("held for" in line for line in stage_lines(metrics))
    # a later evaluation with that choice reports how often the radius held on its queries
    again = {"coarse": metrics_of(coarse, data)}
    add_registered_stage(again, {"coarse": coarse}, data, queries, RegisterConfig(top_k=2, coarse=1), "cpu",
                         None, None, choice)
    assert again["registered"]["radius_coverage"] == reg["radius_coverage"]
    assert again["meta"]["stage_choice"] == choice
