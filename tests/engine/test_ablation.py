"""The cumulative ablation: configs per row, aggregation over seeds, files written."""

import json

import pytest

from sarbridge.cli import main
from sarbridge.engine.ablation import ablation_configs, summarize_runs
from sarbridge.resources import resource_path
from tiny_setup import tiny_config, tiny_overrides


def test_rows_are_cumulative_and_start_with_mos_parts_off():
    cfg = tiny_config(extra=["data.sar_preprocess=percentile", "loss.cmal_weight=5.0"])
    rows = dict(ablation_configs(cfg))
    assert list(rows) == ["baseline", "+denoise", "+CMAL", "+CDGF"]
    b, d, c, f = rows.values()
    assert (b.data.sar_preprocess, b.loss.cmal_weight, b.fusion.enabled) == ("max", 0.0, False)
    assert (d.data.sar_preprocess, d.loss.cmal_weight, d.fusion.enabled) == ("percentile", 0.0, False)
    assert (c.data.sar_preprocess, c.loss.cmal_weight, c.fusion.enabled) == ("percentile", 2.0, False)
    assert (f.data.sar_preprocess, f.loss.cmal_weight, f.fusion.enabled) == ("percentile", 2.0, True)
    assert b.optim == f.optim and b.model == f.model  # same budget and architecture


def test_summarize_runs_mean_and_std():
    runs = [{"all2all": {"mAP": 10.0, "R1": 20.0, "R5": 30.0, "R10": 40.0, "mINP": 5.0, "queries": 7}},
            {"all2all": {"mAP": 20.0, "R1": 30.0, "R5": 30.0, "R10": 50.0, "mINP": 7.0, "queries": 7}}]
    mean, std = summarize_runs(runs)
    assert mean["all2all"]["mAP"] == 15.0 and mean["all2all"]["queries"] == 7
    assert std["all2all"]["mAP"] == pytest.approx(7.0710678)  # sample std of (10, 20)
    assert std["all2all"]["R5"] == 0.0


def test_ablate_cli_two_seeds(tmp_path, capsys):
    args = ["ablate", "--config", str(resource_path("demo.yaml")), "--out", str(tmp_path), "--seeds", "2", "--quiet"]
    for o in tiny_overrides(epochs=1) + ["ablation.cdgf={}"]:  # +CDGF without fusion: re-evaluates +CMAL
        args += ["--set", o]
    assert main(args) == 0
    res = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["baseline", "+denoise", "+CMAL", "+CDGF"]
    assert res["seeds"] == [0, 1]
    for row in res["rows"]:
        assert {"all2all", "opt2sar", "sar2opt", "std", "runs"} <= set(row)
        assert len(row["runs"]) == 2
        assert 0 <= row["all2all"]["mAP"] <= 100
    cmal, cdgf = res["rows"][2], res["rows"][3]
    assert cdgf["all2all"] == pytest.approx(cmal["all2all"])  # the same model, evaluated again
    md = (tmp_path / "ablation.md").read_text()
    assert "+CMAL" in md and "±" in md
    assert (tmp_path / "seed1" / "cmal" / "best.pt").is_file()
    assert "Optical->SAR mAP" in capsys.readouterr().out
