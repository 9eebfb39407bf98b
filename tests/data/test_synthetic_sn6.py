"""The synthetic SN6-CMPC-layout generator: files, geometry, ground truth, determinism, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sarbridge.core.errors import DataError
from sarbridge.data.synthetic.scene_layout import generate_scene_layout
from sarbridge.data.synthetic.scene_render import render_optical, render_sar
from sarbridge.data.synthetic.sn6_layout import _tile_seed, generate_sn6_layout
from sarbridge.tasks.geo.sn6 import read_cmpc_sn6

P, GSD, GRID = 32, 0.5, 2


def _make(root: Path, **kw) -> Path:
    args = {"train_references": 5, "test_references": 4, "grid": GRID, "patch_size": P, "gsd": GSD, "seed": 3,
            "progress": False}
    args.update(kw)
    return generate_sn6_layout(root, **args)


def test_layout_counts_and_reader(tmp_path):
    root = _make(tmp_path / "sa")
    meta = json.loads((root / "meta.json").read_text())
    assert meta["splits"] == {"train": {"references": 5, "queries": 5}, "test": {"references": 4, "queries": 4}}
    assert sorted(p.name for p in (root / "train" / "imgs" / "opt").iterdir()) == [f"{i}.png" for i in range(5)]
    assert sorted(p.name for p in (root / "test" / "annotations" / "opt").iterdir()) == [f"{i}.json" for i in range(5, 9)]
    data = read_cmpc_sn6(root)
    assert len(data.references) == 9 and len(data.queries) == 9
    assert data.meta["footprint_m"] == pytest.approx(P * GSD)  # the reference grid spacing
    assert data.meta["id_near_mismatch"] == 0
    side = P * GSD
    for q in data.queries:
        refs = [r for r in data.references if r.region == ("test" if q.split == "test" else "train")]
        overlap = [max(0.0, side - abs(r.x - q.x)) * max(0.0, side - abs(r.y - q.y)) for r in refs]
        best = refs[int(np.argmax(overlap))]
        assert data.references[q.target] is best  # the match is the reference it overlaps most
        assert abs(q.x - best.x) <= 0.45 * side + GSD and abs(q.y - best.y) <= 0.45 * side + GSD
        assert {data.references[n].index for n in q.near} == {r.index for r, a in zip(refs, overlap)
                                                             if a > 0 and r is not best}


def test_patches_are_cut_from_the_scene_at_their_positions(tmp_path):
    root = _make(tmp_path / "sa")
    side_px = GRID * P + P
    tseed = _tile_seed(3, 0, 1)  # train split, second tile: reference 4 (cell 0, 0 of that tile)
    layout = generate_scene_layout(side_px, side_px, tseed, gsd=GSD)
    optical, sar = render_optical(layout, tseed), render_sar(layout, tseed, gsd=GSD, looks=1)
    x0 = 1 * (side_px * GSD + 1000.0)
    ann = json.loads((root / "train" / "annotations" / "opt" / "4.json").read_text())
    assert ann == {"id": 4, "pos": {"x": x0 + P * GSD, "y": -P * GSD}, "file_path": "4.png"}
    got = np.asarray(Image.open(root / "train" / "imgs" / "opt" / "4.png"))
    assert np.array_equal(got, optical[P // 2:P // 2 + P, P // 2:P // 2 + P])
    q = json.loads((root / "train" / "annotations" / "sar" / "4.json").read_text())
    assert q["id"] == 4 and q["near_id"][0] == 4
    col = int(round((q["pos"]["x"] - x0) / GSD)) - P // 2
    row = int(round(-q["pos"]["y"] / GSD)) - P // 2
    patch = tifffile.imread(root / "train" / "imgs" / "sar" / "4.tif")
    assert patch.dtype == np.float32 and patch.shape == (P, P)
    assert np.array_equal(patch, np.maximum(sar[row:row + P, col:col + P], 0))


def test_aligned_queries_sit_on_the_grid_and_output_is_deterministic(tmp_path):
    a = _make(tmp_path / "a", setting="aligned", query_fraction=0.5)
    b = _make(tmp_path / "b", setting="aligned", query_fraction=0.5)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    data = read_cmpc_sn6(a, setting="aligned")
    assert len(data.queries) == 2 + 1 + 2  # half of 4 + half of 1 (at least one) + half of 4
    for q in data.queries:
        ref = data.references[q.target]
        assert (q.x, q.y) == (ref.x, ref.y) and q.near == ()


def test_refuses_used_or_foreign_folders_and_bad_arguments(tmp_path):
    root = _make(tmp_path / "sa")
    with pytest.raises(DataError, match="is not empty; fix: pass overwrite=True"):
        _make(root)
    _make(root, train_references=2, overwrite=True)  # replaces its own set
    assert len(list((root / "train" / "imgs" / "opt").iterdir())) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="did not write"):
        _make(foreign, overwrite=True)
    assert (foreign / "notes.txt").is_file()
    with pytest.raises(DataError, match="max_shift"):
        _make(tmp_path / "x", max_shift=0.5)
    with pytest.raises(DataError, match="unknown setting"):
        _make(tmp_path / "x", setting="diagonal")
