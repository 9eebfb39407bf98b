"""Sub-pixel peak and peak-to-second-peak ratio against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from sarbridge.tasks.geo.register import peak_ratio, subpixel_peak


def paraboloid(r0: float, c0: float, h: int = 9, w: int = 11) -> torch.Tensor:
    r = torch.arange(h, dtype=torch.float64).view(-1, 1)
    c = torch.arange(w, dtype=torch.float64).view(1, -1)
    return 2.0 * (r - r0) ** 2 + 0.5 * (c - c0) ** 2 + 1.0


def test_subpixel_peak_finds_the_vertex_of_a_separable_paraboloid():
    s = torch.stack([paraboloid(3.3, 6.8), paraboloid(5.0, 2.45)])
    pos = subpixel_peak(s)
    assert pos.shape == (2, 2)
    assert pos[0].tolist() == pytest.approx([3.3, 6.8], abs=1e-9)
    assert pos[1].tolist() == pytest.approx([5.0, 2.45], abs=1e-9)


def test_subpixel_peak_on_the_edge_or_next_to_inf_stays_on_the_integer():
    s = paraboloid(0.0, 4.2)
    s[:, 5] = float("inf")
    pos = subpixel_peak(s)
    assert pos.tolist() == pytest.approx([0.0, 4.0])


def test_peak_ratio_skips_the_peak_neighbourhood():
    s = torch.full((1, 20, 20), 10.0)
    s[0, 5, 5] = 1.0
    s[0, 5, 7] = 1.5  # inside the neighbourhood (exclude=3): ignored
    s[0, 15, 15] = 4.0  # the second peak
    assert peak_ratio(s, exclude=3, eps=0.0) == pytest.approx(4.0)
    assert peak_ratio(s, exclude=1, eps=0.0) == pytest.approx(1.5)


def test_peak_ratio_uses_origins_so_overlapping_windows_do_not_compete():
    s = torch.full((2, 10, 10), 10.0)
    s[0, 2, 3] = 1.0
    s[1, 4, 1] = 1.0  # the same map place seen from a window whose origin is (-2, +2)
    s[1, 8, 8] = 5.0
    assert peak_ratio(s, exclude=2, eps=0.0) == pytest.approx(1.0)  # unrelated windows: a tie
    origins = torch.tensor([[0.0, 0.0], [-2.0, 2.0]])
    assert peak_ratio(s, exclude=2, origins=origins, eps=0.0) == pytest.approx(5.0)
