"""benchmarks/full_recipes.py --quick: the four paper recipes end to end on small sets (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "full_recipes.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_full_recipes", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_phases_from_a_probe_record():
    bench = load_script()
    rec = {"t_start": 100.0, "t_end": 150.0, "rc": 0, "maxrss_kb": 2048, "children_maxrss_kb": 1024,
           "trainers": [{"task": "reid", "init": 110.0, "fit_start": 111.0, "fit_end": 140.0,
                         "epochs": [{"start": 112.0, "end": 130.0}], "steps": [115.0, 120.0, 126.0, 129.0]},
                        {"task": "geo-refine", "init": 141.0, "fit_end": 145.0, "epochs": [], "steps": [142.0]}]}
    got = bench.phases(rec)
    assert got["setup_s"] == 10.0 and got["first_step_s"] == 3.0 and got["optimizer_steps"] == 4
    assert got["s_per_step"] == 5.0  # median of 5, 6, 3
    assert got["validation_s"] == 10.0 and got["after_training_s"] == 10.0
    assert got["peak_rss_mb"] == 2.0 and got["workers_peak_rss_mb"] == 1.0
    assert got["geo-refine_stage_s"] == 4.0 and got["geo-refine_steps"] == 1
    assert bench.phases({**rec, "trainers": []})["evaluation_s"] == 50.0


def test_fusion_estimate_extrapolates_per_image_per_step():
    bench = load_script()
    result = {"fusion_samples": 1, "fusion_steps": 2,
              "data": [{"set": "HOSS-size (synthetic HOSS layout)", "optical_test": 100},
                       {"set": "fusion subset (synthetic HOSS layout)", "optical_test": 4}],
              "rows": [{"run": "mos-plain", "completed": True, "wall_s": 20.0},
                       {"run": "mos-fused", "completed": True, "wall_s": 100.0}]}
    line = bench.fusion_estimate(result)
    # (100 - 20) s / (4 images x 1 x 2) = 10 s per image per step; 100 x 5 x 200 x 10 s = 277.8 h
    assert "= 10.0 s per image per step" in line and "~278 h" in line
    result["rows"][1]["completed"] = False
    assert bench.fusion_estimate(result) == ""


@pytest.mark.slow
def test_quick_run_completes_every_recipe_and_writes_results(tmp_path):
    bench = load_script()
    docs = tmp_path / "reproduce.md"
    docs.write_text(f"# Reproduce\n\n{bench.BEGIN}\nold\n{bench.END}\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = bench.main(["--quick", "--max-steps", "2", "--workers", "0", "--out", str(out), "--quiet-data",
                     "--update-docs", "--docs", str(docs)])
    result = json.loads((out / "results.json").read_text())
    rows = {r["run"]: r for r in result["rows"]}
    assert rc == 0, [(r["run"], r.get("error")) for r in result["rows"]]
    assert list(rows) == ["bbdm", "mos", "mos-plain", "mos-fused", "cmpc"]
    for name in ("bbdm", "mos", "cmpc"):  # the trainer stopped at optim.max_steps
        assert rows[name]["completed"] and rows[name]["optimizer_steps"] == 2, rows[name]
        assert rows[name]["s_per_step"] > 0 and rows[name]["peak_rss_mb"] > 0
        log = [json.loads(x) for x in (out / "runs" / name / ("coarse" if name == "cmpc" else "") / "train_log.jsonl")
               .read_text().splitlines()]
        assert log[-1]["event"] == "max_steps reached" and log[-1]["optimizer_steps"] == 2
    assert rows["mos-fused"]["completed"] and rows["mos-fused"]["evaluation_s"] > 0 and rows["mos-plain"]["completed"]
    fused = json.loads((out / "runs" / "mos-fused" / "metrics.json").read_text())
    assert fused["fusion"]["samples"] == 1 and fused["fusion"]["steps"] == 2
    data = {r["set"].split(" ")[0]: r for r in result["data"]}
    assert data["HOSS-size"]["images"] == 24 * 3 + 10 and data["HOSS-size"]["train_ids"] == 16
    assert data["SN6-CMPC"]["train_references"] == 24
    assert data["fusion"]["optical_test"] == 4  # 2 test ids x 2 optical chips
    md = (out / "results.md").read_text()
    assert "| bbdm | True |" in md and md in docs.read_text() and "old" not in docs.read_text()
