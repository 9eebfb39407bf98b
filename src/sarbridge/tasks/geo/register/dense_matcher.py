"""A learned dense SAR/optical matcher: two small CNNs whose feature maps correlate at the true offset.

Hand-made descriptors (CFOG) align every edge, and on SAR that includes the edges that layover and
radar shadow displace from where the optical image has them, plus single-look speckle. A matcher
trained on the task's own training queries learns which structures the two sensors share. The
design follows the Siamese FFT-correlation matchers for SAR/optical registration (e.g. Hughes et al.,
"A deep learning framework for matching of SAR and optical imagery", ISPRS J. 2020), kept small
enough to train on a CPU in minutes:

* two branches of the same shape, one per modality (no shared weights: the sensors differ), each
  a 5-layer CNN with stride :data:`STRIDE` (4 map pixels per feature pixel), ending in ``dim``
  channels L2-normalised per feature pixel; inputs are standardised per image;
* the matching score of an offset is the mean cosine between the query's and the window's features
  there (a correlation over all offsets, like the descriptors' ZNCC);
* training (:func:`train_dense_matcher`): a random crop of a training query and an optical window
  around its true position with a random margin, and a softmax over every offset of the window with
  the true offset as the class (cross-entropy), seeded and reproducible.

Positions are searched at feature resolution (4 px) and refined to sub-pixel by the usual peak
interpolation (:func:`~sarbridge.tasks.geo.register.peaks.subpixel_peak`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sarbridge.core.errors import DataError
from sarbridge.core.progress import progress_bar
from sarbridge.data.records import SAR

__all__ = ["STRIDE", "DenseMatcher", "MatcherSample", "matcher_loss", "offset_scores", "train_dense_matcher"]

#: map pixels per feature pixel
STRIDE = 4


def standardise(x: Tensor) -> Tensor:
    """Per-image zero mean, unit standard deviation of a (B, 1, H, W) batch."""
    m = x.mean(dim=(-2, -1), keepdim=True)
    s = x.std(dim=(-2, -1), keepdim=True)
    return (x - m) / (s + 1e-6)


class _Branch(nn.Module):
    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 5, stride=2, padding=2), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),
            nn.Conv2d(2 * c, 2 * c, 3, padding=2, dilation=2), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),
            nn.Conv2d(2 * c, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        f = self.net(standardise(x))
        return f / (f.norm(dim=1, keepdim=True) + 1e-6)


class DenseMatcher(nn.Module):
    """The SAR and optical branches and the softmax scale of training.

    Args:
        channels: width of the first layers (the later ones have twice as many).
        dim: feature channels of the output.
    """

    def __init__(self, channels: int = 16, dim: int = 16) -> None:
        super().__init__()
        self.channels, self.dim = int(channels), int(dim)
        self.sar = _Branch(self.channels, self.dim)
        self.optical = _Branch(self.channels, self.dim)
        self.scale = nn.Parameter(torch.tensor(10.0))

    @torch.no_grad()
    def features(self, image: Tensor | np.ndarray, modality: str) -> Tensor:
        """(dim, H / 4, W / 4) unit feature vectors of one (H, W) image (``modality`` ``sar``: dB;
        otherwise optical intensity), on the matcher's device.

        Raises:
            DataError: not 2-D, smaller than 16 px, or NaN/inf pixels.
        """
        x = torch.as_tensor(np.asarray(image) if not isinstance(image, Tensor) else image, dtype=torch.float32)
        if x.ndim != 2 or min(x.shape) < 16:
            raise DataError(f"the dense matcher takes one (H, W) image of at least 16 px, got {tuple(x.shape)}",
                            "pass a single-band SAR (dB) or optical intensity image")
        if not torch.isfinite(x).all():
            raise DataError("the image holds NaN or inf values", "fill or crop no-data pixels before registering")
        branch = self.sar if modality == SAR else self.optical
        dev = next(self.parameters()).device
        return branch(x.to(dev)[None, None])[0]


def offset_scores(query_features: Tensor, window_features: Tensor) -> Tensor:
    """Mean cosine between (B, C, h, w) query and (B, C, H, W) window features at every offset: (B, H-h+1, W-w+1)."""
    b, c, h, w = query_features.shape
    out = F.conv2d(window_features.reshape(1, b * c, *window_features.shape[-2:]), query_features, groups=b)[0]
    return out / float(h * w)


def matcher_loss(model: DenseMatcher, queries: Tensor, windows: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the true offset among all offsets of each window, and the top-1 hit rate.

    Args:
        model: the matcher.
        queries: (B, 1, h, w) SAR crops (dB).
        windows: (B, 1, H, W) optical windows.
        targets: (B, 2) true (row, col) offsets in feature pixels.
    """
    s = offset_scores(model.sar(queries), model.optical(windows)) * model.scale
    flat = s.reshape(s.shape[0], -1)
    cls = targets[:, 0] * s.shape[-1] + targets[:, 1]
    return F.cross_entropy(flat, cls), (flat.argmax(dim=1) == cls).float().mean()


@dataclass
class MatcherSample:
    """One training query: its SAR pixels (dB, map resolution) and its top-left map pixel."""

    sar: np.ndarray
    row: int
    col: int


def _draw(samples: Sequence[MatcherSample], read: Callable[[tuple[int, int, int, int]], np.ndarray],
          shape: tuple[int, int], crop: int, margin: int, batch: int, rng: np.random.Generator
          ) -> tuple[Tensor, Tensor, Tensor]:
    height, width = shape
    side = crop + 2 * margin
    qs, ws, tg = [], [], []
    for i in rng.choice(len(samples), batch):
        s = samples[int(i)]
        h, w = s.sar.shape
        qr, qc = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        tr, tc = s.row + qr, s.col + qc  # map top-left of the crop
        dr, dc = int(rng.integers(0, 2 * margin + 1)), int(rng.integers(0, 2 * margin + 1))
        wr = min(max(0, tr - dr), height - side)
        wc = min(max(0, tc - dc), width - side)
        # any pixel offset (queries lie anywhere); the class is the nearest point of the feature grid
        n = (side - crop) // STRIDE
        qs.append(torch.as_tensor(s.sar[qr:qr + crop, qc:qc + crop], dtype=torch.float32))
        ws.append(torch.as_tensor(read((wr, wc, wr + side, wc + side)), dtype=torch.float32))
        tg.append((min(n, max(0, round((tr - wr) / STRIDE))), min(n, max(0, round((tc - wc) / STRIDE)))))
    return torch.stack(qs)[:, None], torch.stack(ws)[:, None], torch.tensor(tg, dtype=torch.long)


def train_dense_matcher(samples: Sequence[MatcherSample], read: Callable[[tuple[int, int, int, int]], np.ndarray],
                        shape: tuple[int, int], *, steps: int = 200, batch_size: int = 16, lr: float = 2e-3,
                        channels: int = 16, dim: int = 16, margin: int = 64, crop: int | None = None, seed: int = 0,
                        device: torch.device | str = "cpu", progress: bool = False) -> tuple[DenseMatcher, dict[str, float]]:
    """Train a :class:`DenseMatcher` on training queries with known positions in the optical map.

    Args:
        samples: the training queries (SAR dB at map resolution, top-left map pixel).
        read: ``read((row0, col0, row1, col1))`` -> the optical map's (H, W) intensity in that window.
        shape: the map's (height, width) in pixels.
        steps: optimiser steps (one-cycle learning rate).
        batch_size: queries per step.
        lr: peak learning rate (AdamW).
        channels: first-layer width.
        dim: output feature channels.
        margin: map pixels around the true position in a training window (the offsets searched);
            lowered to fit a small map.
        crop: side of the random query crops (default: the query side less 16 px, a multiple of 4).
        seed: seeds the model's initialisation and the sampling.
        device: where to train.
        progress: show a progress bar.

    Returns:
        ``(matcher, stats)``: the matcher in eval mode on CPU, and ``loss``/``top1`` (offset hit rate,
        percent) averaged over the last tenth of the steps.

    Raises:
        DataError: no samples, queries smaller than 32 px, a map too small for training windows, or
            a loss that is not finite (no-data pixels, a learning rate too high).
    """
    if not samples:
        raise DataError("no training queries to train the dense matcher on", "check data.fractions / data.queries")
    side = min(min(s.sar.shape) for s in samples)
    crop = int(crop) if crop is not None else max(32, (side - 16) // STRIDE * STRIDE)
    if side < 32 or crop > side:
        raise DataError(f"queries of {side} px are too small for the dense matcher (crop {crop} px)",
                        "use data.patch_size >= 32 or another eval.register.method")
    margin = min(int(margin), (min(shape) - crop) // 2)  # a small map: smaller training windows
    if margin < STRIDE:
        raise DataError(f"the map ({shape[0]} x {shape[1]} px) is too small for training windows around "
                        f"{crop} px query crops", "use a larger map or smaller data.patch_size")
    with torch.random.fork_rng(devices=[]):  # the seed sets this model's weights, not the caller's generator
        torch.manual_seed(seed)
        model = DenseMatcher(channels, dim)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    model.train()
    tail: list[tuple[float, float]] = []
    bar = progress_bar(range(steps), desc="training the dense matcher", enabled=progress, unit="step")
    for step in bar:
        q, w, t = _draw(samples, read, shape, crop, margin, batch_size, rng)
        loss, hit = matcher_loss(model, q.to(dev), w.to(dev), t.to(dev))
        if not torch.isfinite(loss):
            raise DataError(f"the dense matcher's loss is not finite at step {step} (NaN/inf pixels in the map "
                            "or the queries, or a learning rate too high)", "check the data, or lower matcher.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - max(1, steps // 10):
            tail.append((float(loss.detach()), float(hit)))
    stats = {"loss": float(np.mean([a for a, _ in tail])) if tail else float("nan"),
             "top1": float(np.mean([b for _, b in tail]) * 100.0) if tail else float("nan")}
    return model.cpu().eval(), stats
