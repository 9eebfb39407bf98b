"""Overlapping candidate windows searched as one box give the answers of searching each window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_registered_stage import textured_scene

import sarbridge.tasks.geo.register.evaluation as ev
from sarbridge.data.georaster import read_georaster
from sarbridge.tasks.geo.register.evaluation import MapRegistrar, box_area, union_box


def test_union_box_and_area() -> None:
    boxes = [(0, 0, 10, 10), (5, 5, 20, 12)]
    assert union_box(boxes) == (0, 0, 20, 12) and box_area((5, 5, 20, 12)) == 15 * 7 and box_area((3, 3, 2, 9)) == 0


@pytest.mark.parametrize("coarse", [1, 2])
def test_union_search_matches_the_window_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, coarse: int) -> None:
    scene = textured_scene(tmp_path / "scene", size=160)
    opt, sar = read_georaster(scene / "optical.tif"), read_georaster(scene / "sar.tif")
    t = opt.transform
    h = w = 32
    r, c = 70, 53  # the query's true top-left
    query = sar.array[0, r : r + h, c : c + w]
    # candidate cells of 32 px around it (the true one third): windows of 64 px that overlap a lot
    cells = [(64, 32), (64, 64), (64, 48), (96, 48), (48, 48)]
    footprints = [(t.c + cc * t.a, t.f + (rr + h) * t.e, t.c + (cc + w) * t.a, t.f + rr * t.e) for rr, cc in cells]
    registrar = MapRegistrar(scene / "optical.tif", "cfog", margin=16, coarse=coarse)
    calls: list[int] = []
    original = ev.register_coarse_to_fine

    def counting(q, wins, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - a spy
        calls.append(len(wins))
        return original(q, wins, *args, **kwargs)

    monkeypatch.setattr(ev, "register_coarse_to_fine", counting)
    union, boxes = registrar.register_pixels(query, h, w, footprints)
    assert calls == [1]  # one search in the union box
    monkeypatch.setattr(ev, "UNION_SEARCH_SHARE", 0.0)
    windows, boxes_w = registrar.register_pixels(query, h, w, footprints)
    assert calls == [1, len(cells)] and boxes == boxes_w
    assert (union.row, union.col) == pytest.approx((r, c), abs=0.5)
    assert (union.row, union.col) == pytest.approx((windows.row, windows.col), abs=0.5)
    # every window that holds the true position finds it, in both searches
    holds = [i for i, (r0, c0, r1, c1) in enumerate(boxes) if r0 <= r <= r1 - h and c0 <= c <= c1 - w]
    assert union.candidate in holds and windows.candidate in holds
    for i in holds:
        assert (union.rows[i], union.cols[i]) == pytest.approx((r, c), abs=coarse)
    assert union.surface.shape[0] == len(cells) and union.confidence > 1.0
    assert np.all(np.isfinite(union.scores))
