"""``sarbridge geo register``: a SAR image placed in a georeferenced optical map, training-free."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from sarbridge.app.cli import main
from sarbridge.tasks.geo.register.command import register_on_map

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pyproj")


def from_origin(west: float, north: float, xsize: float, ysize: float) -> object:
    return rasterio.Affine(xsize, 0.0, west, 0.0, -ysize, north)


FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "terramind-s1s2-pairs"
TILE = "609U_541L_3_0.tif"
X0, Y0 = 500000.0, 5400000.0  # EPSG:32631 upper-left corner of the synthetic map, 1 m pixels
SIZE, Q = 192, 64
ROW, COL = 70, 90  # the SAR crop's top-left in the map


def _write(path: Path, arr: np.ndarray, transform=None, crs: str | None = "EPSG:32631") -> Path:
    arr = arr[None] if arr.ndim == 2 else arr
    kw = {"transform": transform, "crs": crs} if transform is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                           dtype=arr.dtype, **kw) as dst:
            dst.write(arr)
    return path


def _scene(seed: int = 0) -> np.ndarray:
    """A structured optical map: rectangles ("fields", "buildings") and a few roads on a grey background."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE), 90.0)
    for _ in range(60):
        r, c = rng.integers(0, SIZE - 8, 2)
        h, w = rng.integers(6, 40, 2)
        img[r : r + h, c : c + w] = rng.uniform(20, 235)
    for _ in range(4):
        r = rng.integers(0, SIZE)
        img[r : r + 3, :] = 200
        c = rng.integers(0, SIZE)
        img[:, c : c + 3] = 30
    return img


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("register_cmd")
    grey = _scene()
    rgb = np.stack([grey, 0.8 * grey + 20, 255 - 0.5 * grey]).clip(0, 255).astype(np.uint8)
    tr = from_origin(X0, Y0, 1.0, 1.0)
    rng = np.random.default_rng(1)
    crop = grey[ROW : ROW + Q, COL : COL + Q]
    sar = ((crop / 255.0) ** 2 + 0.02) * rng.gamma(4.0, 1 / 4.0, crop.shape)  # contrast change + 4-look speckle
    sar = sar.astype(np.float32)
    # the SAR georeference is 6 px too far east and 4 px too far south: the registration must correct it
    sar_tr = from_origin(X0 + COL + 6, Y0 - ROW - 4, 1.0, 1.0)
    out = {
        "map": _write(d / "map.tif", rgb, tr),
        "sar_geo": _write(d / "sar_geo.tif", sar, sar_tr),
        "sar_plain": _write(d / "sar_plain.tif", sar),
        "tiny": _write(d / "tiny.tif", sar[:8, :8].copy()),
        "nan": _write(d / "nan.tif", np.where(np.arange(Q * Q).reshape(Q, Q) == 5, np.nan, sar).astype(np.float32)),
        "big": _write(d / "big.tif", np.ones((SIZE + 10, SIZE + 10), np.float32)),
        "many_bands": _write(d / "many.tif", np.zeros((20, 64, 64), np.uint8), tr),
    }
    return out


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    rc = main(["geo", "register", *argv])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 and cap.out.startswith("{") else None), cap.err


def _check_position(res: dict) -> None:
    col, row = COL + Q / 2, ROW + Q / 2  # the true centre in map pixels
    assert abs(res["col"] - col) <= 1.0 and abs(res["row"] - row) <= 1.0
    assert np.hypot(res["x"] - (X0 + col), res["y"] - (Y0 - row)) <= 1.0  # 1 m pixels
    assert res["confident"] and res["confidence"] >= res["threshold"]
    assert res["error_radius_m"] == pytest.approx(1.0)
    assert res["crs"] == "EPSG:32631" and abs(res["lon"] - 3.0) < 0.01 and 48.7 < res["lat"] < 48.8


def test_plain_query_is_found_in_the_whole_map(files, capsys):
    rc, res, _ = _run(capsys, "--map", str(files["map"]), "--query", str(files["sar_plain"]), "--json")
    assert rc == 0 and res is not None
    _check_position(res)
    assert res["window_source"] == "whole map" and res["shift_reference"] == "window centre"
    assert res["shift_px"][0] == pytest.approx(COL + Q / 2 - SIZE / 2, abs=1.0)
    assert res["shift_px"][1] == pytest.approx(ROW + Q / 2 - SIZE / 2, abs=1.0)


def test_georeferenced_query_shift_corrects_its_own_position(files, capsys):
    rc, res, _ = _run(capsys, "--map", str(files["map"]), "--query", str(files["sar_geo"]), "--json")
    assert rc == 0 and res is not None
    _check_position(res)
    assert res["window_source"] == "query georeference" and res["shift_reference"] == "query georeference"
    assert np.allclose(res["shift_px"], [-6, -4], atol=1.0)
    assert np.allclose(res["shift_m"], [-6, 4], atol=1.0)  # west 6 m, north 4 m


def test_window_and_around(files, capsys):
    rc, res, _ = _run(capsys, "--map", str(files["map"]), "--query", str(files["sar_plain"]),
                      "--window", f"{COL - 20},{ROW - 15},{COL + Q + 10},{ROW + Q + 25}", "--json")
    assert rc == 0 and res is not None
    _check_position(res)
    assert res["window"] == [COL - 20, ROW - 15, COL + Q + 10, ROW + Q + 25]
    assert np.allclose(res["shift_px"], [5, -5], atol=1.0)  # the window centre is 5 px west and 5 px south of it

    pyproj = pytest.importorskip("pyproj")
    lon, lat = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(
        X0 + COL + Q / 2 + 3, Y0 - ROW - Q / 2 - 2)
    rc, res, _ = _run(capsys, "--map", str(files["map"]), "--query", str(files["sar_geo"]),
                      "--around", f"{lon},{lat},60", "--method", "cfog", "--json")
    assert rc == 0 and res is not None
    _check_position(res)
    assert res["window_source"] == "around" and res["shift_reference"] == "query georeference"


def test_text_output_names_position_shift_confidence_and_radius(files, capsys):
    assert main(["geo", "register", "--map", str(files["map"]), "--query", str(files["sar_geo"])]) == 0
    out = capsys.readouterr().out
    for word in ("position: lon", "EPSG:32631", "shift from the query georeference", "confidence:", "above the threshold",
                 "error radius: 1.0 m"):
        assert word in out


def test_library_function_ncc_runs(files):
    res = register_on_map(files["map"], files["sar_plain"], window=(40, 20, 200 - 8, 180), method="ncc")
    assert res["method"] == "ncc" and len(res["window"]) == 4 and res["error_radius_m"] > 0


@pytest.mark.parametrize("argv, needle", [
    (["--query", "{sar_plain}", "--map", "{missing}"], "not found"),
    (["--query", "{missing}", "--map", "{map}"], "not found"),
    (["--query", "{sar_plain}", "--map", "{map}", "--window", "0,0,500,100"], "outside the map"),
    (["--query", "{sar_plain}", "--map", "{map}", "--window", "0,0,40,100"], "larger than the search window"),
    (["--query", "{big}", "--map", "{map}"], "larger than the search window"),
    (["--query", "{tiny}", "--map", "{map}"], "support"),
    (["--query", "{sar_plain}", "--map", "{many_bands}"], "bands"),
    (["--query", "{nan}", "--map", "{map}"], "NaN"),
    (["--query", "{sar_plain}", "--map", "{map}", "--window", "1,2,x,4"], "comma-separated"),
    (["--query", "{sar_plain}", "--map", "{map}", "--window", "5,5,5,40"], "empty"),
    (["--query", "{sar_plain}", "--map", "{map}", "--around", "3.0,48.7"], "comma-separated"),
    (["--query", "{sar_plain}", "--map", "{map}", "--around", "3.0,48.7,-5"], "radius"),
    (["--query", "{sar_plain}", "--map", "{map}", "--around", "10.0,40.0,100"], "outside the map"),
])
def test_bad_input_gives_one_line_and_exit_2(files, capsys, tmp_path, argv, needle):
    names = {**{k: str(v) for k, v in files.items()}, "missing": str(tmp_path / "missing.tif")}
    rc, _, err = _run(capsys, *[a.format(**names) for a in argv])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; fix: " in lines[0] and needle in lines[0]


def test_whole_map_larger_than_the_limit_is_refused(files, monkeypatch, capsys):
    import sarbridge.tasks.geo.register.command as command

    monkeypatch.setattr(command, "MAX_WINDOW_SIDE", 128)
    rc, _, err = _run(capsys, "--map", str(files["map"]), "--query", str(files["sar_plain"]))
    assert rc == 2 and "--around" in err and "--window" in err and len(err.strip().splitlines()) == 1


def test_real_sentinel_sar_window_registered_into_the_s2_map(tmp_path, capsys):
    r0, c0 = 40, 40  # the offset tests/tasks/geo/register/test_register_real.py registers within one pixel
    with rasterio.open(FIXTURE / "S1RTC" / TILE) as src:
        sar = src.read().astype(np.float32)[:, r0 : r0 + 64, c0 : c0 + 64]  # VV, VH in dB
    q = _write(tmp_path / "s1_crop.tif", sar, crs=None)
    rc, res, _ = _run(capsys, "--map", str(FIXTURE / "S2RGB" / TILE), "--query", str(q),
                      "--window", f"{c0 - 24},{r0 - 24},{c0 + 64 + 24},{r0 + 64 + 24}", "--json")
    assert rc == 0 and res is not None
    err_px = np.hypot(res["col"] - (c0 + 32), res["row"] - (r0 + 32))
    assert err_px <= 2.0 and res["confident"]
    assert res["gsd_m"] == pytest.approx([10.0, 10.0], abs=0.01)
    assert np.hypot(*res["shift_m"]) <= 20.0  # the window is centred on the true position

    with rasterio.open(FIXTURE / "S2RGB" / TILE) as src:
        t = src.transform
    x, y = t.c + t.a * (c0 + 32), t.f + t.e * (r0 + 32)  # north-up tile
    lon, lat = pytest.importorskip("pyproj").Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)
    rc, res, _ = _run(capsys, "--map", str(FIXTURE / "S2RGB" / TILE), "--query", str(q),
                      f"--around={lon:.7f},{lat:.7f},400", "--json")  # negative longitude: the = form
    assert rc == 0 and res is not None and res["window_source"] == "around"
    assert np.hypot(res["x"] - x, res["y"] - y) <= 20.0
