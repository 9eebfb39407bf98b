"""``sarbridge despeckle``: file and folder modes, outputs, and one-line errors with exit code 2."""

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarbridge.app.cli import main
from sarbridge.data.despeckle import despeckle


def _sar(path: Path, shape=(24, 18), seed=0) -> np.ndarray:
    arr = (np.random.default_rng(seed).gamma(2.0, 0.5, size=shape) + 1e-3).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, photometric="minisblack")
    return arr


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_single_file_to_file_and_into_folder(tmp_path, capsys):
    src = tmp_path / "a_SAR.tif"
    arr = _sar(src)
    before = src.read_bytes()
    out = tmp_path / "out" / "a_filtered.tif"
    assert main(["despeckle", "--input", str(src), "--out", str(out), "--method", "kuan", "--window", "5", "--looks", "2", "--quiet"]) == 0
    got = tifffile.imread(out)
    assert got.dtype == np.float32 and got.shape == arr.shape
    np.testing.assert_allclose(got, despeckle(arr, "kuan", 5, 2.0), rtol=1e-6)
    assert not np.array_equal(got, arr)
    assert src.read_bytes() == before
    assert "despeckled 1 image(s) with kuan" in capsys.readouterr().out
    folder = tmp_path / "dst"
    folder.mkdir()
    assert main(["despeckle", "--input", str(src), "--out", str(folder), "--quiet"]) == 0
    assert tifffile.imread(folder / "a_SAR.tif").shape == arr.shape
    assert main(["despeckle", "--input", str(src), "--out", str(tmp_path / "new_folder"), "--quiet"]) == 0  # no suffix: a folder
    assert tifffile.imread(tmp_path / "new_folder" / "a_SAR.tif").shape == arr.shape


def test_folder_mode_keeps_relative_names_recursively(tmp_path):
    src = tmp_path / "in"
    arrays = {
        "query/1_SAR.tif": _sar(src / "query" / "1_SAR.tif", (20, 11), 1),
        "gallery/2_SAR.tiff": _sar(src / "gallery" / "2_SAR.tiff", (13, 30), 2),
        "3_SAR.TIF": _sar(src / "3_SAR.TIF", (9, 9), 3),
    }
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["despeckle", "--input", str(src), "--out", str(out), "--method", "gamma_map", "--quiet"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(arrays)
    for rel, arr in arrays.items():
        got = tifffile.imread(out / rel)
        assert got.shape == arr.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, despeckle(arr, "gamma_map", 7), rtol=1e-6)
    flat = tmp_path / "flat"
    assert main(["despeckle", "--input", str(src), "--out", str(flat), "--no-recursive", "--quiet"]) == 0
    assert [p.name for p in flat.rglob("*") if p.is_file()] == ["3_SAR.TIF"]


def test_glob_selects_sar_in_a_mixed_hoss_folder(tmp_path, write_rgb):
    src = tmp_path / "HOSS"
    _sar(src / "query" / "0001_s01c2_SAR.tif")
    write_rgb(src / "query" / "0001_s01c1_RGB.tif")
    out = tmp_path / "out"
    assert main(["despeckle", "--input", str(src), "--out", str(out), "--glob", "*_SAR.tif", "--method", "frost",
                 "--damping", "2", "--quiet"]) == 0
    assert [p.name for p in out.rglob("*.tif")] == ["0001_s01c2_SAR.tif"]


def test_output_inside_input_folder_is_not_reprocessed(tmp_path):
    src = tmp_path / "in"
    _sar(src / "a.tif")
    out = src / "filtered"
    assert main(["despeckle", "--input", str(src), "--out", str(out), "--quiet"]) == 0
    assert main(["despeckle", "--input", str(src), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert [p.relative_to(src).as_posix() for p in sorted(src.rglob("*.tif"))] == ["a.tif", "filtered/a.tif"]


def test_existing_outputs_are_not_replaced_without_overwrite(tmp_path, capsys):
    src = tmp_path / "in"
    _sar(src / "a.tif")
    out = tmp_path / "out"
    assert main(["despeckle", "--input", str(src), "--out", str(out), "--quiet"]) == 0
    before = (out / "a.tif").read_bytes()
    assert main(["despeckle", "--input", str(src), "--out", str(out), "--quiet", "--method", "kuan"]) == 2
    err = _one_error_line(capsys)
    assert "1 output file(s) exist already" in err and "--overwrite" in err
    assert (out / "a.tif").read_bytes() == before


def test_old_positional_form_still_works_with_a_note(tmp_path, capsys):
    src = tmp_path / "a.tif"
    _sar(src)
    out = tmp_path / "o.tif"
    assert main(["despeckle", str(src), str(out), "--quiet"]) == 0
    assert out.is_file()
    assert "'despeckle IN OUT' is deprecated" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "not found"),
        ("same_file", "is the input"),
        ("same_folder", "is the input"),
        ("unknown_method", "unknown despeckle method 'median'.*frost, gamma_map, kuan, lee"),
        ("even_window", "odd"),
        ("bad_looks", "--looks"),
        ("damping_not_frost", "--damping applies to --method frost"),
        ("empty_folder", "no SAR images"),
        ("rgb_file", "3 bands"),
        ("rgb_in_folder", "3 bands"),
        ("negative", "negative"),
        ("not_tiff", "not a TIFF"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, capsys, write_rgb, case, match):
    src = tmp_path / "a_SAR.tif"
    _sar(src)
    out = tmp_path / "out.tif"
    argv = {
        "missing": [str(tmp_path / "nope.tif"), str(out)],
        "same_file": [str(src), str(src)],
        "same_folder": [str(tmp_path), str(tmp_path)],
        "unknown_method": [str(src), str(out), "--method", "median"],
        "even_window": [str(src), str(out), "--window", "6"],
        "bad_looks": [str(src), str(out), "--looks", "0"],
        "damping_not_frost": [str(src), str(out), "--damping", "2"],
        "empty_folder": [str(tmp_path / "empty"), str(tmp_path / "o")],
        "rgb_file": [str(tmp_path / "x_RGB.tif"), str(out)],
        "rgb_in_folder": [str(tmp_path), str(tmp_path / "o")],
        "negative": [str(tmp_path / "neg.tif"), str(out)],
        "not_tiff": [str(tmp_path / "a.png"), str(out)],
    }[case]
    (tmp_path / "empty").mkdir()
    if case in ("rgb_file", "rgb_in_folder"):
        write_rgb(tmp_path / "x_RGB.tif")
    if case == "negative":
        tifffile.imwrite(tmp_path / "neg.tif", np.full((8, 8), -1.0, dtype=np.float32))
    if case == "not_tiff":
        (tmp_path / "a.png").write_bytes(b"png")
    before = src.read_bytes()
    assert main(["despeckle", "--input", argv[0], "--out", argv[1], *argv[2:], "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert re.search(match, err), err
    assert src.read_bytes() == before
    assert not out.exists() and not (tmp_path / "o").exists()  # nothing written on error
