"""Tests for sarbridge.viz.figures: ranked-retrieval figures and display conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarbridge.viz.figures import (
    STATUS_COLOURS,
    RankedCandidate,
    RankedRow,
    layout_boxes,
    retrieval_figure,
    to_display_uint8,
)

STATUSES = ("match", "near", "wrong")


def make_rows(n_rows: int, k: int, seed: int = 0) -> list[RankedRow]:
    """Rows mixing uint8 RGB, float SAR and 16-bit grey images, statuses cycling match/near/wrong."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_rows):
        cands = []
        for j in range(k):
            kind = j % 3
            if kind == 0:
                img = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
            elif kind == 1:
                img = rng.gamma(1.0, 0.05, size=(25, 25)).astype(np.float32)
            else:
                img = rng.integers(0, 4000, size=(50, 20), dtype=np.uint16)
            cands.append(RankedCandidate(img, STATUSES[j % 3], f"#{j + 1}  {100 * j} m  s=0.{9 - j % 9}"))
        query = rng.gamma(1.0, 0.05, size=(32, 32)).astype(np.float32)
        rows.append(RankedRow(query, f"query {i}", cands))
    return rows


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------------------------
# to_display_uint8
# --------------------------------------------------------------------------------------------
def test_uint8_rgb_passes_through_unchanged():
    img = np.random.default_rng(1).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    out = to_display_uint8(img)
    assert out.dtype == np.uint8 and out.shape == (9, 7, 3)
    np.testing.assert_array_equal(out, img)


def test_float_sar_is_stretched_to_full_range():
    sar = np.random.default_rng(2).gamma(1.0, 0.05, size=(64, 64)).astype(np.float32)
    out = to_display_uint8(sar)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert out.min() == 0 and out.max() == 255
    # robust: a few extreme outliers do not crush the rest of the image to black
    sar[0, :3] = 1e6
    out = to_display_uint8(sar)
    assert np.median(out) > 20
    # monotone mapping
    flat = sar.ravel()
    order = np.argsort(flat, kind="stable")
    assert np.all(np.diff(out[..., 0].ravel()[order].astype(int)) >= 0)


def test_single_band_replicated_to_three_channels():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_display_uint8(grey)
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)
    one_channel = to_display_uint8(np.random.default_rng(3).random((5, 6, 1)))
    assert one_channel.shape == (5, 6, 3)
    np.testing.assert_array_equal(one_channel[..., 0], one_channel[..., 2])


def test_display_edge_cases():
    assert to_display_uint8(np.full((4, 4), 3.5)).max() == 0  # constant -> no division by zero
    with_nan = np.array([[np.nan, 0.0], [1.0, np.inf]])
    out = to_display_uint8(with_nan)
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0
    assert to_display_uint8(np.zeros((2, 2, 4), dtype=np.uint8)).shape == (2, 2, 3)  # RGBA -> RGB
    with pytest.raises(ValueError):
        to_display_uint8(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError):
        to_display_uint8(np.zeros((0, 3)))


# --------------------------------------------------------------------------------------------
# retrieval_figure
# --------------------------------------------------------------------------------------------
def test_png_written_and_matches_layout(tmp_path):
    rows = make_rows(2, 5)
    out = retrieval_figure(rows, tmp_path / "sub" / "fig.png", title="SAR -> optical, top-5")
    assert out == tmp_path / "sub" / "fig.png" and out.is_file()
    layout = layout_boxes(rows, title="SAR -> optical, top-5")
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (layout.width, layout.height)


def test_size_grows_with_k_and_rows(tmp_path):
    def size(n_rows: int, k: int) -> tuple[int, int]:
        with Image.open(retrieval_figure(make_rows(n_rows, k), tmp_path / f"f{n_rows}_{k}.png")) as im:
            return im.size

    w1, h1 = size(1, 1)
    w5, h5 = size(1, 5)
    w20, _ = size(1, 20)
    _, h3 = size(3, 5)
    assert w1 < w5 < w20
    assert h5 <= h1  # narrow figures stack the legend, which may add height
    assert h3 > h5


def test_border_colours_follow_status(tmp_path):
    rows = make_rows(2, 6)
    path = retrieval_figure(rows, tmp_path / "fig.png", title="borders")
    pix = read_rgb(path).astype(int)
    layout = layout_boxes(rows, title="borders")
    b = layout.border
    assert b >= 2
    for r, row in enumerate(rows):
        for cand, (left, top, right, bottom) in zip(row.candidates, layout.candidate_boxes[r]):
            # the middle of each side of the frame, half a border in
            samples = [
                pix[top + b // 2, (left + right) // 2],
                pix[bottom - 1 - b // 2, (left + right) // 2],
                pix[(top + bottom) // 2, left + b // 2],
                pix[(top + bottom) // 2, right - 1 - b // 2],
            ]
            for red, green, blue in samples:
                if cand.status == "match":
                    assert green > red + 60 and green > blue + 60, (red, green, blue)
                elif cand.status == "near":
                    assert red > 180 and green > 150 and blue < 80, (red, green, blue)
                else:
                    assert red > green + 100 and red > blue + 100, (red, green, blue)
            np.testing.assert_array_equal(pix[top + b // 2, (left + right) // 2], STATUS_COLOURS[cand.status])


def test_thumbnail_content_is_placed_inside_the_border(tmp_path):
    rgb = np.zeros((20, 20, 3), dtype=np.uint8)
    rgb[..., 2] = 255  # pure blue, square: fills the whole inner area
    rows = [RankedRow(rgb, "q", [RankedCandidate(rgb, "wrong", "#1")])]
    pix = read_rgb(retrieval_figure(rows, tmp_path / "fig.png", thumb=64))
    layout = layout_boxes(rows, thumb=64)
    left, top, right, bottom = layout.candidate_boxes[0][0]
    centre = pix[(top + bottom) // 2, (left + right) // 2]
    np.testing.assert_array_equal(centre, (0, 0, 255))
    ql, qt, qr, qb = layout.query_boxes[0]
    np.testing.assert_array_equal(pix[(qt + qb) // 2, (ql + qr) // 2], (0, 0, 255))


def test_rows_with_different_lengths_and_long_captions(tmp_path):
    rows = make_rows(3, 4)
    rows[1].candidates = rows[1].candidates[:1]
    rows[2].candidates[0].caption = "a very long caption that cannot possibly fit under one thumbnail " * 3
    rows[2].query_caption = "$not math$ and_a_very_long_unbroken_query_identifier_string"
    path = retrieval_figure(rows, tmp_path / "fig.png", thumb=48, dpi=72)
    layout = layout_boxes(rows, thumb=48, dpi=72)
    assert [len(b) for b in layout.candidate_boxes] == [4, 1, 4]
    with Image.open(path) as im:
        assert im.size == (layout.width, layout.height)


def test_empty_rows_raise(tmp_path):
    with pytest.raises(ValueError, match="at least one RankedRow"):
        retrieval_figure([], tmp_path / "fig.png")
    assert not any(tmp_path.iterdir())


def test_unknown_status_raises():
    with pytest.raises(ValueError, match="status"):
        RankedCandidate(np.zeros((4, 4)), "maybe", "")  # type: ignore[arg-type]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    rows = make_rows(1, 3)
    target = tmp_path / "fig.png"
    retrieval_figure(rows, target)
    retrieval_figure(rows, target)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]
    # a failure while drawing leaves neither the target nor a temporary file behind
    bad = [RankedRow(np.zeros((4, 4)), "q", [RankedCandidate(np.zeros((0, 4)), "match", "")])]
    with pytest.raises(ValueError):
        retrieval_figure(bad, tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_legend_lists_near_misses_only_when_a_candidate_is_one(monkeypatch, tmp_path):
    """Re-identification figures (match / wrong only) carry no 'overlapping neighbour' legend entry."""
    import matplotlib.figure

    from sarbridge.viz import figures as fig_mod

    labels: list[list[str]] = []
    real = matplotlib.figure.Figure.legend

    def spy(self, *args, **kwargs):
        labels.append([h.get_label() for h in kwargs.get("handles", [])])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "legend", spy)
    img = np.zeros((12, 8, 3), np.uint8)
    reid = [fig_mod.RankedRow(img, "q", [fig_mod.RankedCandidate(img, "match", "a"),
                                         fig_mod.RankedCandidate(img, "wrong", "b")])]
    geo = [fig_mod.RankedRow(img, "q", [fig_mod.RankedCandidate(img, "near", "a"),
                                        fig_mod.RankedCandidate(img, "wrong", "b")])]
    fig_mod.retrieval_figure(reid, tmp_path / "reid.png")
    fig_mod.retrieval_figure(geo, tmp_path / "geo.png")
    assert labels[0] == [fig_mod.STATUS_LABELS["match"], fig_mod.STATUS_LABELS["wrong"]]
    assert labels[1] == [fig_mod.STATUS_LABELS[s] for s in ("match", "near", "wrong")]
