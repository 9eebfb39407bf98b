"""SN6-CMPC in its released layout and CMPC's metric definitions (hand-computed values)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.config import load_geo_config
from sarbridge.tasks.geo.evaluate import evaluate_localisation
from sarbridge.tasks.geo.run import load_localisation
from sarbridge.tasks.geo.sn6 import CMPC_SN6_CRS, is_cmpc_sn6_folder, read_cmpc_sn6
from sarbridge.tasks.geo.train import area_views

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "cmpc_sn6.yaml"


def _ann(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")


def _opt(root: Path, split: str, name: str, i: int, x: float, y: float) -> None:
    img = root / split / "imgs" / "opt" / f"{name}.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), 10 + i, np.uint8)).save(img)
    _ann(root / split / "annotations" / "opt" / f"{name}.json",
         {"id": i, "pos": {"x": x, "y": y}, "file_path": f"{name}.png"})


def _sar(root: Path, split: str, name: str, i: int, x: float, y: float, near: list[int] | None) -> None:
    img = root / split / "imgs" / "sar" / f"{name}.tif"
    img.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(img, np.full((6, 6), 50 + int(name), np.uint8))
    doc = {"id": i, "pos": {"x": x, "y": y}, "file_path": f"{name}.tif"}
    if near is not None:
        doc["near_id"] = near
    _ann(root / split / "annotations" / "sar" / f"{name}.json", doc)


def make_sn6(root: Path) -> Path:
    """train: optical ids 0..2 on a 10-unit row; test: ids 3..6 on a 10-unit square (file names
    like the release: optical <id>.png, SAR <n>.tif); ``near_id[0]`` is the match."""
    for i, (x, y) in enumerate([(0, 0), (10, 0), (20, 0)]):
        _opt(root, "train", str(i), i, x, y)
    _sar(root, "train", "0", 1, 12.0, 1.0, [1, 2, 0])
    _sar(root, "train", "1", 0, 1.0, -1.0, [0, 1])
    for i, (x, y) in zip(range(3, 7), [(100, 0), (110, 0), (100, 10), (110, 10)]):
        _opt(root, "test", str(i), i, x, y)
    _sar(root, "test", "2", 4, 108.0, 2.0, [4, 6, 3])
    _sar(root, "test", "10", 5, 101.0, 9.0, [5, 3])
    _sar(root, "test", "3", 3, 100.0, 3.0, None)
    return root


def test_reads_the_released_layout(tmp_path):
    root = make_sn6(tmp_path / "SN6-CMPC" / "samearea")
    assert is_cmpc_sn6_folder(root) and not is_cmpc_sn6_folder(tmp_path)
    data = read_cmpc_sn6(root, patch_size=10.0)
    assert data.crs == CMPC_SN6_CRS and data.meta["layout"] == "sn6-cmpc"
    assert [(r.region, r.x, r.y) for r in data.references] == [
        ("train", 0, 0), ("train", 10, 0), ("train", 20, 0),
        ("test", 100, 0), ("test", 110, 0), ("test", 100, 10), ("test", 110, 10)]
    ref_ids = [int(Path(r.source).stem) for r in data.references]
    assert ref_ids == [0, 1, 2, 3, 4, 5, 6]
    assert data.references[4].source == str(root / "test" / "imgs" / "opt" / "4.png")
    assert data.references[4].load()[0, 0, 0] == 14
    # queries in numeric order of their file names; ground truth = near_id[0] (= id); near = near_id[1:]
    qs = data.queries
    assert [Path(q.source).name for q in qs] == ["0.tif", "1.tif", "2.tif", "3.tif", "10.tif"]
    assert [ref_ids[q.target] for q in qs] == [1, 0, 4, 3, 5]
    assert [tuple(ref_ids[n] for n in q.near) for q in qs] == [(2, 0), (1,), (6, 3), (5,), (3,)]
    assert [q.split for q in qs] == ["train", "train", "test", "test", "test"]
    assert {q.setting for q in qs} == {"arbitrary"}
    assert (qs[2].x, qs[2].y) == (108.0, 2.0) and qs[2].footprint == (103.0, -3.0, 113.0, 7.0)
    assert qs[4].load()[0, 0] == 60 and np.isnan(qs[0].lon)
    assert data.meta["id_near_mismatch"] == 0 and data.meta["splits"]["test"] == {"references": 4, "queries": 3}
    # each split searches its own gallery (CMPC's train / test galleries)
    train_view, test_view = area_views(data)
    assert len(train_view.references) == 3 and len(test_view.references) == 4
    assert [Path(test_view.references[q.target].source).stem for q in test_view.split("test")] == ["4", "3", "5"]


def test_footprint_default_setting_and_val(tmp_path):
    root = make_sn6(tmp_path / "sa")
    data = read_cmpc_sn6(root, setting="aligned", val_fraction=0.5, seed=0)
    assert data.meta["footprint_m"] == 10.0 and data.meta["footprint_inferred"]
    assert {q.setting for q in data.queries} == {"aligned"}
    assert sorted(q.split for q in data.queries[:2]) == ["train", "val"]


def test_id_and_near_id_disagreements(tmp_path):
    root = make_sn6(tmp_path / "sa")
    # id names no optical patch: near_id[0] is the match
    _sar(root, "train", "0", 99, 12.0, 1.0, [2, 1])
    data = read_cmpc_sn6(root)
    assert data.queries[0].target == 2 and data.meta["id_near_mismatch"] == 1
    _sar(root, "train", "0", 99, 12.0, 1.0, [98])
    with pytest.raises(DataError, match="neither id '99' nor near_id"):
        read_cmpc_sn6(root)


def test_layout_errors(tmp_path):
    root = make_sn6(tmp_path / "sa")
    with pytest.raises(DataError, match="not an SN6-CMPC folder"):
        read_cmpc_sn6(tmp_path)
    (root / "test" / "imgs" / "opt" / "5.png").unlink()
    with pytest.raises(DataError, match=r"5.json': image .*5.png' not found"):
        read_cmpc_sn6(root)
    _opt(root, "test", "5", 5, 100, 10)
    _ann(root / "test" / "annotations" / "opt" / "7.json", {"id": 4, "pos": {"x": 1, "y": 2}, "file_path": "4.png"})
    with pytest.raises(DataError, match="optical id '4' repeats"):
        read_cmpc_sn6(root)
    _ann(root / "test" / "annotations" / "opt" / "7.json", {"id": 7, "pos": {"x": 1}, "file_path": "4.png"})
    with pytest.raises(DataError, match="7.json': pos"):
        read_cmpc_sn6(root)


def test_cmpc_config_reads_the_folder(tmp_path):
    root = make_sn6(tmp_path / "SN6-CMPC" / "samearea")
    cfg = load_geo_config(CONFIG, [f"data.root={root}"])
    assert cfg.data.format == "sn6"
    data = load_localisation(cfg)
    assert data.meta["layout"] == "sn6-cmpc" and len(data.queries) == 5
    # detected from the folder structure under the default format too
    auto = load_localisation(load_geo_config(None, [f"data.root={root}"]))
    assert auto.meta["layout"] == "sn6-cmpc" and auto.queries[0].setting == cfg.data.setting
    with pytest.raises(DataError, match="neither an SN6-CMPC folder nor a sarbridge JSON listing"):
        load_localisation(load_geo_config(CONFIG, [f"data.root={tmp_path}"]))


def test_evaluation_reports_cmpc_metrics_over_all_references(tmp_path):
    data = read_cmpc_sn6(make_sn6(tmp_path / "sa"), patch_size=10.0)
    _, view = area_views(data)
    queries = view.split("test")
    g = torch.Generator().manual_seed(3)
    ref_emb = torch.nn.functional.normalize(torch.randn(len(view.references), 8, generator=g), dim=1)
    q_emb = torch.nn.functional.normalize(torch.randn(len(queries), 8, generator=g), dim=1)
    metrics, _ = evaluate_localisation(view, queries, ref_emb, q_emb, top_k=2)
    c = metrics["coarse"]
    sim = (q_emb @ ref_emb.T).numpy()
    ranks = [1 + int((sim[i] > sim[i, q.target]).sum()) for i, q in enumerate(queries)]
    assert c["cmpc_map_mrr"] == pytest.approx(np.mean([1 / r for r in ranks]) * 100)
    top1 = sim.argmax(1)
    err = [np.hypot(view.references[t].x - q.x, view.references[t].y - q.y) for t, q in zip(top1, queries)]
    assert c["cmpc_err_mean"] == pytest.approx(np.mean(err)) and c["mean_err_m"] == pytest.approx(np.mean(err))
    assert "mAP" in c and c["cmpc_mrr_exact"] is True
