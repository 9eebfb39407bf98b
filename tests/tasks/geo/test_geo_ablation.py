"""The localisation ablation: variants, the mean/std summary (hand-computed) and one tiny real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_geo_pipeline import REPO, TINY

from conftest import geo_write_scene
from sarbridge.app.cli import main
from sarbridge.tasks.geo.ablation import ablation_variants, summarize
from sarbridge.tasks.geo.config import GeoConfig


def test_variants_switch_the_right_parts() -> None:
    v = ablation_variants(GeoConfig())
    assert not v["A"].loss.wasserstein.enabled and not v["A"].refine.enabled and v["A"].eval.rerank == "none"
    assert v["B"].loss.wasserstein.enabled and v["B"].refine.enabled and v["B"].eval.rerank == "k-reciprocal"
    cfg = GeoConfig()
    cfg.matcher.enabled, cfg.eval.register.method = True, "learned"
    for c in ablation_variants(cfg).values():  # retrieval rows: nothing trained or run for registration
        assert not c.matcher.enabled and not c.eval.register.enabled and c.eval.register.method == "cfog"


def test_summary_mean_and_std_by_hand() -> None:
    def m(top1: float) -> dict:
        return {"top1": top1, "top5": 50.0, "top10": 60.0, "mAP": top1 / 2, "median_err_m": 10.0, "succ_100m": 70.0}

    runs = [{"A": {"coarse": m(10.0)}, "B": {"coarse": m(20.0), "refined": m(30.0), "reranked": m(25.0)}},
            {"A": {"coarse": m(20.0)}, "B": {"coarse": m(40.0), "refined": m(50.0), "reranked": m(25.0)}}]
    rows = {r["name"]: r for r in summarize(runs)}
    assert rows["triplet only"]["mean"]["top1"] == 15.0 and rows["triplet only"]["std"]["top1"] == 5.0
    assert rows["+ Wasserstein"]["mean"]["mAP"] == 15.0
    assert rows["+ graph refinement"]["mean"]["top1"] == 40.0 and rows["+ graph refinement"]["runs"] == 2
    assert rows["+ Wasserstein, k-reciprocal re-ranking instead"]["std"]["top1"] == 0.0


def test_ablation_command_writes_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = geo_write_scene(tmp_path / "scene", seed=5)
    sets = [a for kv in TINY + ["optim.epochs=1", "refine.epochs=1", "matcher.steps=4", "matcher.batch_size=4"]
            for a in ("--set", kv)]
    out = tmp_path / "abl"
    assert main(["geo", "ablate", "--config", str(REPO / "configs" / "geo_demo.yaml"), "--data", str(scene),
                 "--out", str(out), "--quiet", *sets]) == 0
    result = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["triplet only", "+ Wasserstein", "+ graph refinement",
                                                  "+ Wasserstein, k-reciprocal re-ranking instead"]
    md = (out / "ablation.md").read_text()
    assert md.count("\n| ") == 4 + 1 and "top1" in md
    assert (out / "seed0" / "A" / "metrics.json").is_file() and (out / "seed0" / "B" / "geo_model.pt").is_file()
    assert "triplet only" in capsys.readouterr().out
