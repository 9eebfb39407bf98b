"""Tests for sarbridge.data.manifest: reading a user CSV into samples and splits, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarbridge.core.errors import DataError
from sarbridge.data.manifest import load_manifest_splits, read_manifest
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.data.splits import build_protocols

HEADER = "path,id,modality,split,lon,lat,timestamp"
ROWS = [
    "ships/a1.tif,17,optical,train,4.12,51.95,2024-03-01T10:22:00Z",
    "ships/a1_sar.tif,17,SAR,train,,,",
    "ships/b1.tif,18,RGB,train,-3.5,-12.25,",
    "ships/b1_sar.tif,18,sar,train,,,2024-03-02",
    "ships/q1.tif,20,opt,query,,,",
    "ships/q2.tif,21,radar,query,,,",
    "ships/g1.tif,20,s1,gallery,,,",
    "ships/g2.tif,21,eo,gallery,,,",
    "ships/g3.tif,-1,sar,gallery,,,",
]


def _touch_images(root: Path, rows: list[str], write_rgb) -> None:
    for row in rows:
        rel = row.split(",", 1)[0]
        if rel and not Path(rel).is_absolute():
            target = root / rel
            if not target.exists():
                write_rgb(target, height=4, width=3)


@pytest.fixture
def make_manifest(tmp_path, write_rgb):
    """``make_manifest(rows, header=HEADER)`` writes the CSV (and images for its paths) and returns it."""

    def make(rows: list[str], header: str = HEADER, name: str = "manifest.csv", images: bool = True) -> Path:
        if images:
            _touch_images(tmp_path, rows, write_rgb)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        return path

    return make


def test_read_manifest_values(make_manifest, tmp_path):
    csv_path = make_manifest(ROWS)
    samples = read_manifest(csv_path)
    assert len(samples) == len(ROWS)
    first = samples[0]
    assert first.path == str(tmp_path / "ships" / "a1.tif")  # relative to the manifest's folder
    assert Path(first.path).is_file()
    assert (first.pid, first.modality, first.split, first.camid) == (17, OPTICAL, "train", 0)
    assert first.lon == pytest.approx(4.12) and first.lat == pytest.approx(51.95)
    assert first.timestamp == "2024-03-01T10:22:00Z"
    assert isinstance(first.lon, float)
    second = samples[1]
    assert (second.modality, second.lon, second.lat, second.timestamp) == (SAR, None, None, None)
    assert (samples[2].lon, samples[2].lat) == (-3.5, -12.25)
    assert samples[3].timestamp == "2024-03-02"
    assert [s.modality for s in samples[4:]] == [OPTICAL, SAR, SAR, OPTICAL, SAR]
    assert samples[-1].pid == -1


def test_manifest_splits_and_protocols(make_manifest):
    splits = load_manifest_splits(make_manifest(ROWS))
    assert [s.pid for s in splits.train] == [17, 17, 18, 18]
    assert [s.pid for s in splits.query] == [20, 21]
    assert [s.pid for s in splits.gallery] == [20, 21, -1]
    assert splits.subsets == {}
    protocols, source = build_protocols(splits)
    assert source == "derived"
    q, g = protocols["opt2sar"]
    assert [s.pid for s in q] == [20] and sorted(s.pid for s in g) == [-1, 20]


def test_absolute_paths_camid_and_case_insensitive_split(tmp_path, make_manifest, write_rgb):
    elsewhere = tmp_path / "other" / "x.tif"
    write_rgb(elsewhere)
    rows = [f"{elsewhere},3,optical,TRAIN,,,", f"{elsewhere},3,sar, Query ,,,"]
    header = "path,id,modality,split,lon,lat,timestamp"
    csv_path = make_manifest(rows, header=header, name="sub/m.csv", images=False)
    samples = read_manifest(csv_path)
    assert [s.path for s in samples] == [str(elsewhere)] * 2
    assert [s.split for s in samples] == ["train", "query"]

    csv2 = make_manifest(["ships/c.tif,5,sar,gallery,2"], header="path,id,modality,split,camid", name="cam.csv")
    (s,) = read_manifest(csv2)
    assert s.camid == 2 and s.lon is None and s.timestamp is None


def test_only_required_columns(make_manifest):
    csv_path = make_manifest(["a.tif,1,optical,train", "b.tif,1,sar,train"], header="path,id,modality,split")
    samples = read_manifest(csv_path)
    assert [(s.pid, s.modality, s.lon, s.lat, s.timestamp) for s in samples] == [
        (1, OPTICAL, None, None, None), (1, SAR, None, None, None)
    ]


def _expect(csv_path: Path, line: int | None, *fragments: str) -> None:
    with pytest.raises(DataError) as exc:
        read_manifest(csv_path)
    msg = str(exc.value)
    assert csv_path.name in msg, msg
    if line is not None:
        assert f"{csv_path.name}:{line}" in msg, msg
    for frag in fragments:
        assert frag in msg, msg


def test_missing_manifest(tmp_path):
    _expect(tmp_path / "absent.csv", None, "not found")


@pytest.mark.parametrize("dropped", ["path", "id", "modality", "split"])
def test_missing_column(make_manifest, dropped):
    cols = ["path", "id", "modality", "split"]
    keep = [i for i, c in enumerate(cols) if c != dropped]
    rows = [",".join(r.split(",")[i] for i in keep) for r in ["a.tif,1,optical,train"]]
    csv_path = make_manifest(rows, header=",".join(cols[i] for i in keep))
    _expect(csv_path, None, "lacks column", dropped)


def test_missing_image(make_manifest):
    rows = ROWS[:2] + ["ships/ghost.tif,17,sar,train,,,"]
    csv_path = make_manifest(rows)
    (csv_path.parent / "ships" / "ghost.tif").unlink()
    _expect(csv_path, 4, "ghost.tif", "not found")


@pytest.mark.parametrize("bad_id", ["abc", "1.5", ""])
def test_bad_id(make_manifest, bad_id):
    csv_path = make_manifest([ROWS[0], f"ships/a1.tif,{bad_id},optical,train,,,"])
    _expect(csv_path, 3, "id", "not an integer")


def test_unknown_split(make_manifest):
    csv_path = make_manifest([ROWS[0], ROWS[1], "ships/a1.tif,17,optical,val,,,"])
    _expect(csv_path, 4, "unknown split 'val'")


def test_unknown_modality(make_manifest):
    csv_path = make_manifest(["ships/a1.tif,17,infrared,train,,,"])
    _expect(csv_path, 2, "unknown modality 'infrared'")


@pytest.mark.parametrize("column,index", [("lon", 4), ("lat", 5)])
def test_bad_coordinate(make_manifest, column, index):
    fields = "ships/a1.tif,17,optical,train,4.0,51.0,".split(",")
    fields[index] = "north"
    csv_path = make_manifest([ROWS[0], ROWS[1], ",".join(fields)])
    _expect(csv_path, 4, f"column '{column}'", "north")


def test_header_only_manifest_is_empty(make_manifest):
    csv_path = make_manifest([])
    _expect(csv_path, None, "empty")


@pytest.mark.parametrize("missing", ["train", "query", "gallery"])
def test_splits_require_each_split(make_manifest, missing):
    rows = [r for r in ROWS if r.split(",")[3] != missing]
    csv_path = make_manifest(rows)
    with pytest.raises(DataError, match=f"split '{missing}'") as exc:
        load_manifest_splits(csv_path)
    assert csv_path.name in str(exc.value)


def test_splits_without_train_for_evaluation(make_manifest):
    rows = [r for r in ROWS if r.split(",")[3] != "train"]
    splits = load_manifest_splits(make_manifest(rows), require_train=False)
    assert splits.train == [] and len(splits.query) == 2 and len(splits.gallery) == 3


def test_bad_camid_is_data_error(make_manifest):
    csv_path = make_manifest(["ships/c.tif,5,sar,train,x1"], header="path,id,modality,split,camid")
    _expect(csv_path, 2, "camid")


def test_short_row_is_data_error(make_manifest):
    csv_path = make_manifest([ROWS[0], "ships/a1.tif,17"])
    _expect(csv_path, 3)


def test_manifest_with_utf8_bom(make_manifest):
    csv_path = make_manifest(ROWS)
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    assert len(read_manifest(csv_path)) == len(ROWS)
