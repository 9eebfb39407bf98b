"""Smoke run of benchmarks/geo_registration.py on the TerraMind fixture tile (quick settings)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = ROOT / "benchmarks" / "geo_registration.py"
FIXTURE = ROOT / "tests" / "fixtures" / "terramind-s1s2-pairs"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_geo_registration", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json_and_markdown(tmp_path):
    pytest.importorskip("rasterio")
    bench = load_script()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "terramind-s1s2-pairs").symlink_to(FIXTURE)
    out = tmp_path / "out"
    assert bench.main(["--data", str(tmp_path / "data"), "--datasets", "terramind", "--optical", "gray",
                       "--quick", "--speed", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = {(r["dataset"], r["tile"], r["method"]): r for r in res["rows"]}
    assert set(rows) == {(d, t, m) for d, t in [("terramind", "609U_541L_3_0"), ("terramind", "all"), ("all", "all")]
                         for m in bench.METHODS}
    assert rows["terramind", "609U_541L_3_0", "cfog"]["n"] == 2 and res["offsets"][0]["sar_unit"] == "dB as stored"
    errs = [s["err"] for s in res["samples"] if s["method"] == "cfog"]
    assert rows["all", "all", "cfog"]["median_m"] == pytest.approx((errs[0] + errs[1]) / 2)
    assert len(res["thresholds"]) == len(bench.METHODS) * len(bench.THRESHOLDS)
    sp = res["speed"]
    assert sp["direct_over_fft"] > 0 and sp["max_rel_diff"] < 1e-3
    assert sp["found"] == pytest.approx(sp["truth"], abs=0.2)
    assert sp["found_c2f"] == pytest.approx(sp["truth"], abs=0.2)
    md = (out / "results.md").read_text()
    assert "| terramind | 609U_541L_3_0 | 64 | cfog | 2 |" in md and "Direct spatial SSD / FFT SSD" in md


def test_bad_arguments_are_refused():
    bench = load_script()
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "8"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--windows", "0"])
