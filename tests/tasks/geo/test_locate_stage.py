"""``geo locate`` follows the validation choice, labels its score column and registers with --register."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from affine import Affine
from test_registered_stage import textured_scene

from sarbridge.app.cli import main
from sarbridge.data.georaster import read_georaster, write_georaster
from sarbridge.retrieval.index import EmbeddingIndex
from sarbridge.tasks.geo.bundle import build_encoder, build_refiner, save_geo_model
from sarbridge.tasks.geo.config import load_geo_config
from sarbridge.tasks.geo.locate import GeoLocator
from sarbridge.tasks.geo.map_index import build_geo_index

REPO = Path(__file__).resolve().parents[3]
TINY = ["data.patch_size=32", "data.image_size=[32,32]", "model.embed_dim=32", "refine.hidden=16", "refine.heads=2",
        "device=cpu", "eval.register.coarse=1", "eval.register.method=cfog", "matcher.enabled=false"]


def _bundle(tmp_path: Path, choice: dict | None, *extra: str, matcher: Any = None) -> tuple[Path, Path]:
    scene = textured_scene(tmp_path / "scene")
    cfg = load_geo_config(REPO / "configs" / "geo_demo.yaml", [f"data.root={scene}", *TINY, *extra])
    info = {"patch_size_m": 16.0, **({"stage_choice": choice} if choice else {})}
    model = save_geo_model(tmp_path / "geo_model.pt", cfg, build_encoder(cfg, load_pretrained=False),
                           build_refiner(cfg, 16.0), info, matcher)
    index = build_geo_index(scene / "optical.tif", model, tmp_path / "index", device="cpu", progress=False)
    return scene, index


def _query(scene: Path, out: Path, col0: int, row0: int, side: int = 32) -> Path:
    sar = read_georaster(scene / "sar.tif")
    t = sar.transform
    return write_georaster(out, sar.window(col0, row0, side, side),
                           Affine(t.a, 0, t.c + col0 * t.a, 0, t.e, t.f + row0 * t.e), sar.crs)


CHOICE = {"retrieval": "coarse", "register": False, "threshold": 1.02, "split": "val", "queries": 8,
          "reason": "graph refinement does not help"}


def test_locate_uses_coarse_when_validation_says_refinement_does_not_help(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene, index = _bundle(tmp_path, CHOICE)
    query = _query(scene, tmp_path / "q.tif", 40, 72)
    assert main(["geo", "locate", "--index", str(index), "--query", str(query), "--json", "-k", "4"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["stage"] == "coarse" and not res["refined"] and "did not help" in res["stage_note"]
    assert "registration" not in res  # validation did not choose it and --register was not given
    assert res["rank_by"] == "score"
    scores = [c["score"] for c in res["candidates"]]
    assert scores == sorted(scores, reverse=True)  # the shown score follows the shown rank
    # coarse: the position is the top-1 cell's centre
    assert (res["x"], res["y"]) == (res["candidates"][0]["x"], res["candidates"][0]["y"])
    assert main(["geo", "locate", "--index", str(index), "--query", str(query)]) == 0
    text = capsys.readouterr().out
    assert "stage: coarse retrieval: the graph refinement did not help" in text
    header = next(line for line in text.splitlines() if line.startswith("rank  patch"))
    assert header.endswith("similarity") and "ranks follow the similarity" in text


def test_locate_register_prints_position_shift_confidence_and_radius(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an older bundle (no choice recorded: the refiner is used); the untrained encoder's candidates are
    # arbitrary, so all 25 cells of the map are registered around (then the true place is among the windows)
    scene, index = _bundle(tmp_path, None, "eval.register.top_k=25")
    query = _query(scene, tmp_path / "q.tif", 45, 70)
    assert main(["geo", "locate", "--index", str(index), "--query", str(query), "--json", "--register"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["stage"] == "refined" and res["rank_by"] == "probability"
    probs = [c["probability"] for c in res["candidates"][:10]]
    assert probs == sorted(probs, reverse=True)
    reg = res["registration"]
    for key in ("lon", "lat", "shift_m", "shift_distance_m", "confidence", "threshold", "error_radius_m", "note",
                "registered"):
        assert key in reg, key
    assert reg["threshold"] == pytest.approx(1.05) and "not calibrated" in reg["threshold_source"]
    assert reg["registered"] and "registered in the window of candidate" in reg["note"]
    # the answer moves to the registered position, within a pixel of the truth; the radius is one pixel
    assert res["check_error_m"] < 0.5 and res["lon"] == reg["lon"] and res["error_radius_m"] == pytest.approx(0.5)
    assert "no validation calibration" in reg["error_radius_basis"]
    assert reg["shift_distance_m"] == pytest.approx(float(np.hypot(*reg["shift_m"])))
    # a threshold no match reaches: the retrieval position is kept, and the answer says so
    locator = GeoLocator(index, "cpu")
    plain = locator.locate(query, register=False)
    locator.model.cfg.eval.register.threshold = 1000.0
    kept = locator.locate(query, register=True)
    assert not kept["registration"]["registered"] and "kept the retrieval position" in kept["registration"]["note"]
    assert (kept["x"], kept["y"], kept["error_radius_m"]) == (plain["x"], plain["y"], plain["error_radius_m"])
    assert main(["geo", "locate", "--index", str(index), "--query", str(query), "--register"]) == 0
    text = capsys.readouterr().out
    assert "registration (cfog):" in text and "shift from the cell centre" in text
    assert "registration confidence:" in text and "error radius" in text
    assert "p(refined)" in text


def _tile_folder(scene: Path, out: Path, side: int = 80) -> Path:
    """The scene's optical map cut into GeoTIFF tiles of ``side`` px (one map read through map_source)."""
    opt = read_georaster(scene / "optical.tif")
    t = opt.transform
    out.mkdir()
    for r0 in range(0, opt.height, side):
        for c0 in range(0, opt.width, side):
            w, h = min(side, opt.width - c0), min(side, opt.height - r0)
            write_georaster(out / f"tile_{r0:03d}_{c0:03d}.tif", opt.window(c0, r0, w, h),
                            Affine(t.a, 0, t.c + c0 * t.a, 0, t.e, t.f + r0 * t.e), opt.crs)
    return out


def test_locate_registers_in_a_map_indexed_from_a_folder_of_tiles(tmp_path: Path) -> None:
    # the index's info.map is a folder: registration reads its windows lazily (map_source), and places
    # the query as it does in the single-file map
    scene, _ = _bundle(tmp_path, None, "eval.register.top_k=25")
    tiles = _tile_folder(scene, tmp_path / "tiles")
    index = build_geo_index(tiles, tmp_path / "geo_model.pt", tmp_path / "index_tiles", device="cpu",
                            progress=False)
    assert Path(EmbeddingIndex.load(index).info["map"]).is_dir()
    query = _query(scene, tmp_path / "q.tif", 45, 70)
    res = GeoLocator(index, "cpu").locate(query, register=True)
    reg = res["registration"]
    assert reg["registered"] and res["check_error_m"] < 0.5
    single = GeoLocator(tmp_path / "index", "cpu").locate(query, register=True)["registration"]
    assert (reg["x"], reg["y"]) == pytest.approx((single["x"], single["y"]), abs=1e-6)


def test_locate_registers_with_the_bundles_learned_matcher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sarbridge.tasks.geo.register.dense_matcher import DenseMatcher

    torch.manual_seed(0)
    scene, index = _bundle(tmp_path, None, "eval.register.top_k=25", "matcher.enabled=true",
                           "eval.register.method=learned", matcher=DenseMatcher(4, 4).eval())
    query = _query(scene, tmp_path / "q.tif", 45, 70)
    assert main(["geo", "locate", "--index", str(index), "--query", str(query), "--json", "--register"]) == 0
    reg = json.loads(capsys.readouterr().out)["registration"]
    assert reg["method"] == "learned" and np.isfinite(reg["confidence"]) and reg["candidate"] >= 1
    # a bundle that names the learned method but holds no matcher: one line, exit 2
    scene, index = _bundle(tmp_path / "none", None, "matcher.enabled=true", "eval.register.method=learned")
    assert main(["geo", "locate", "--index", str(index), "--query", str(_query(scene, tmp_path / "q2.tif", 45, 70)),
                 "--register"]) == 2
    assert "needs the dense matcher" in capsys.readouterr().err
