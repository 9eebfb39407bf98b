"""Readers of localisation sets: sarbridge JSON listing, geo manifest CSV and BigEarthNet pairs."""

from __future__ import annotations

import copy
import csv
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from pyproj import Transformer

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.readers import read_bigearthnet_localisation, read_geo_manifest, read_sn6_cmpc, utm_crs

BEN_ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "bigearthnet-s1s2-pairs"
TO_LL = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
X0, Y0 = 500000.0, 5700000.0


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        tifffile.imwrite(folder / n, np.full((6, 6), i + 1, np.uint8))


def _sn6_doc(root: Path) -> dict:
    _images(root / "opt", [f"r{i}.tif" for i in range(4)])
    _images(root / "sar", [f"q{i}.tif" for i in range(3)])
    lon3, lat3 = TO_LL.transform(X0 + 15, Y0 - 15)
    lon1, lat1 = TO_LL.transform(X0 + 15, Y0 - 5)
    return {
        "crs": "EPSG:32631",
        "patch_size_m": 10.0,
        "references": [
            {"id": "r0", "image": "opt/r0.tif", "x": X0 + 5, "y": Y0 - 5, "region": "train"},
            {"id": "r1", "image": "opt/r1.tif", "lon": lon1, "lat": lat1},
            {"id": "r2", "image": "opt/r2.tif", "x": X0 + 5, "y": Y0 - 15, "footprint": [X0, Y0 - 20, X0 + 10, Y0 - 10]},
            {"id": "r3", "image": "opt/r3.tif", "x": X0 + 15, "y": Y0 - 15},
        ],
        "queries": [
            {"id": "q0", "image": "sar/q0.tif", "x": X0 + 8, "y": Y0 - 7, "split": "train"},
            {"id": "q1", "image": "sar/q1.tif", "lon": lon3, "lat": lat3},
            {"id": "q2", "image": "sar/q2.tif", "x": X0 + 8, "y": Y0 - 7, "target": "r1", "near": ["r0", "r1"],
             "split": "val", "setting": "aligned"},
        ],
    }


def _write_json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_sn6_round_trip(tmp_path):
    data = read_sn6_cmpc(_write_json(tmp_path / "sn6.json", _sn6_doc(tmp_path)))
    assert data.crs == "EPSG:32631" and len(data.references) == 4 and len(data.queries) == 3
    r1 = data.references[1]
    assert math.isclose(r1.x, X0 + 15, abs_tol=1e-6) and math.isclose(r1.y, Y0 - 5, abs_tol=1e-6)
    assert data.references[0].region == "train" and data.references[3].region == ""
    lon0, lat0 = TO_LL.transform(X0 + 5, Y0 - 5)
    assert math.isclose(data.references[0].lon, lon0) and math.isclose(data.references[0].lat, lat0)
    assert data.references[2].footprint == (X0, Y0 - 20, X0 + 10, Y0 - 10)
    q0, q1, q2 = data.queries
    # q0 covers x 3..13, y -12..-2: r0 7x8=56, r1 3x8=24, r2 7x2=14, r3 3x2=6
    assert (q0.target, q0.near, q0.split, q0.setting) == (0, (1, 2, 3), "train", "arbitrary")
    assert q0.footprint == (X0 + 3, Y0 - 12, X0 + 13, Y0 - 2)
    assert (q1.target, q1.near, q1.split) == (3, (), "test")
    assert (q2.target, q2.near, q2.split, q2.setting) == (1, (0,), "val", "aligned")
    img = pickle.loads(pickle.dumps(q2.load))()
    assert img.shape == (6, 6) and img[0, 0] == 3
    assert data.references[3].load()[0, 0] == 4
    assert data.meta["layout"] == "geo-listing" and data.meta["footprint_m"] == 10.0


def test_sn6_lonlat_without_crs_uses_utm(tmp_path):
    doc = _sn6_doc(tmp_path)
    del doc["crs"], doc["patch_size_m"]
    for e in doc["references"] + doc["queries"]:
        if "x" in e:
            e["lon"], e["lat"] = TO_LL.transform(e.pop("x"), e.pop("y"))
    data = read_sn6_cmpc(_write_json(tmp_path / "ll.json", doc))
    assert data.crs == "EPSG:32631" and data.meta["crs_inferred"]
    assert math.isclose(data.meta["footprint_m"], 10.0, rel_tol=1e-6)  # median nearest-neighbour spacing
    assert data.queries[0].target == 0
    assert utm_crs(3.0, 51.5) == "EPSG:32631" and utm_crs(-70.6, -33.4) == "EPSG:32719"


def _broken(doc: dict, case: str) -> dict:
    doc = copy.deepcopy(doc)
    if case == "missing-image-key":
        del doc["queries"][0]["image"]
    elif case == "unknown-target":
        doc["queries"][1]["target"] = "nope"
    elif case == "unknown-near":
        doc["queries"][1]["near"] = ["r0", "zz"]
    elif case == "missing-file":
        doc["references"][2]["image"] = "opt/absent.tif"
    elif case == "split":
        doc["queries"][0]["split"] = "dev"
    elif case == "setting":
        doc["queries"][0]["setting"] = "shifted"
    elif case == "no-crs":
        del doc["crs"]  # r0 gives x/y
    elif case == "duplicate":
        doc["references"][3]["id"] = "r0"
    elif case == "no-position":
        del doc["queries"][0]["x"], doc["queries"][0]["y"]
    elif case == "footprint":
        doc["references"][0]["footprint"] = [1, 2, 3]
    elif case == "no-queries":
        doc["queries"] = []
    return doc


@pytest.mark.parametrize("case, words", [
    ("missing-image-key", r"queries\[0\] lacks 'image'"),
    ("unknown-target", r"queries\[1\] \(id 'q1'\): target 'nope' is not a reference id"),
    ("unknown-near", "near 'zz' is not a reference id"),
    ("missing-file", r"references\[2\] \(id 'r2'\): image '.*absent.tif' not found"),
    ("split", "unknown split 'dev'"),
    ("setting", "unknown setting 'shifted'"),
    ("no-crs", r"references\[0\] \(id 'r0'\): projected x/y position without a CRS"),
    ("duplicate", "duplicate reference id 'r0'"),
    ("no-position", r"queries\[0\] \(id 'q0'\): no position"),
    ("footprint", "is not \\[x0, y0, x1, y1\\]"),
    ("no-queries", "lacks a non-empty 'queries' list"),
])
def test_sn6_errors_name_file_and_entry(tmp_path, case, words):
    path = _write_json(tmp_path / "bad.json", _broken(_sn6_doc(tmp_path), case))
    with pytest.raises(DataError, match=words) as err:
        read_sn6_cmpc(path)
    assert "bad.json" in str(err.value)


def test_sn6_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_sn6_cmpc(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json' is not valid JSON"):
        read_sn6_cmpc(tmp_path / "broken.json")


def _manifest(tmp_path: Path, extra: list[dict] | None = None) -> Path:
    _images(tmp_path / "img", [f"r{i}.tif" for i in range(9)] + ["q0.tif", "q1.tif"])
    rows = []
    for i in range(9):
        lon, lat = TO_LL.transform(X0 + 100 * (i % 3), Y0 - 100 * (i // 3))
        rows.append({"path": f"img/r{i}.tif", "role": "reference", "lon": lon, "lat": lat, "id": f"r{i}"})
    lon, lat = TO_LL.transform(X0 + 130, Y0 - 80)  # 30 m east, 20 m north of r4
    rows.append({"path": "img/q0.tif", "role": "query", "lon": lon, "lat": lat, "split": "train"})
    lon, lat = TO_LL.transform(X0 + 200, Y0 - 200)
    rows.append({"path": "img/q1.tif", "role": "query", "lon": lon, "lat": lat, "size_m": "50"})
    rows += extra or []
    path = tmp_path / "geo.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "role", "lon", "lat", "id", "split", "size_m"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_manifest_with_lonlat(tmp_path):
    data = read_geo_manifest(_manifest(tmp_path))
    assert data.crs == "EPSG:32631" and len(data.references) == 9 and len(data.queries) == 2
    assert math.isclose(data.meta["footprint_m"], 100.0, rel_tol=1e-6)
    q0, q1 = data.queries
    # 100 m footprint shifted (+30, +20) from r4: r5 30x80, r1 70x20, r2 30x20
    assert (q0.target, q0.near, q0.split, q0.setting) == (4, (5, 1, 2), "train", "arbitrary")
    assert (q1.target, q1.near, q1.split) == (8, (), "test")
    assert q1.footprint[2] - q1.footprint[0] == pytest.approx(50.0)
    assert math.isclose(q0.x, X0 + 130, abs_tol=1e-6)


def test_manifest_errors_give_the_line(tmp_path):
    bad = _manifest(tmp_path, [{"path": "img/q0.tif", "role": "satellite", "lon": 3, "lat": 51}])
    with pytest.raises(DataError, match=r"geo.csv:13: role 'satellite'"):
        read_geo_manifest(bad)
    bad = _manifest(tmp_path, [{"path": "img/q0.tif", "role": "query", "lon": "east", "lat": 51}])
    with pytest.raises(DataError, match=r"geo.csv:13: 'lon' = 'east'"):
        read_geo_manifest(bad)
    bad = _manifest(tmp_path, [{"path": "img/none.tif", "role": "query", "lon": 3, "lat": 51}])
    with pytest.raises(DataError, match=r"geo.csv:13: image .*none.tif' not found"):
        read_geo_manifest(bad)
    (tmp_path / "cols.csv").write_text("path,role,east\nimg/q0.tif,query,1\n")
    with pytest.raises(DataError, match="cols.csv' lacks column"):
        read_geo_manifest(tmp_path / "cols.csv")


def test_manifest_projected_xy_with_crs_column(tmp_path):
    _images(tmp_path, ["a.tif", "b.tif", "c.tif"])
    (tmp_path / "xy.csv").write_text(
        "path,role,x,y,crs,size_m\n"
        f"a.tif,reference,{X0 + 5},{Y0 - 5},EPSG:32631,10\n"
        f"b.tif,reference,{X0 + 15},{Y0 - 5},EPSG:32631,10\n"
        f"c.tif,query,{X0 + 13},{Y0 - 5},EPSG:32631,10\n")
    data = read_geo_manifest(tmp_path / "xy.csv")
    assert data.crs == "EPSG:32631" and (data.queries[0].target, data.queries[0].near) == (1, (0,))


# --- BigEarthNet -------------------------------------------------------------------------------

def test_bigearthnet_localisation_fixture():
    data = read_bigearthnet_localisation(BEN_ROOT)
    assert len(data.references) == 6 and len(data.queries) == 6 and data.crs == "LOCAL:mgrs-grid"
    cell = {r.source.rsplit("_", 2)[-2] + "_" + r.source.rsplit("_", 1)[-1]: r.index for r in data.references}
    assert sorted(cell) == ["37_88", "37_89", "37_90", "38_88", "38_89", "38_90"]
    r = data.references[cell["37_89"]]
    assert (r.x, r.y) == (89 * 1200 + 600, -(37 * 1200 + 600)) and math.isnan(r.lon) and math.isnan(r.lat)
    assert r.footprint == (r.x - 600, r.y - 600, r.x + 600, r.y + 600)
    for q in data.queries:
        assert q.target == q.index and q.split == "test" and q.setting == "aligned"
        assert q.source.endswith(data.references[q.target].source.rsplit("_", 2)[-2] + "_" +
                                 data.references[q.target].source.rsplit("_", 1)[-1] + ".npz")
    near_cells = {name: {k for k, v in cell.items() if v in data.queries[i].near} for name, i in cell.items()}
    assert near_cells["37_89"] == {"37_88", "37_90", "38_88", "38_89", "38_90"}
    assert near_cells["37_88"] == {"37_89", "38_88", "38_89"}
    assert near_cells["38_90"] == {"37_89", "37_90", "38_89"}
    # edge neighbours come before diagonal ones
    q = data.queries[cell["37_89"]]
    assert [k for i in q.near for k, v in cell.items() if v == i][:3] == ["37_88", "37_90", "38_89"]
    assert data.references[0].load().shape[-1] == 3 and data.queries[0].load().ndim == 2
    val = read_bigearthnet_localisation(BEN_ROOT, val_fraction=0.5, seed=1)
    assert len(val.split("val")) == 3 and len(val.split("test")) == 3
    with pytest.raises(DataError, match="val_fraction"):
        read_bigearthnet_localisation(BEN_ROOT, val_fraction=1.5)


def test_former_listing_name_is_the_listing_reader():
    from sarbridge.tasks.geo.readers import read_geo_listing

    assert read_sn6_cmpc is read_geo_listing
