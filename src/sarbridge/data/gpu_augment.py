"""Batched training augmentation on tensors, on whatever device the batch lives (the GPU in training).

:class:`BatchAugment` does what :meth:`PreprocessSpec.train_transform` does to one PIL image, for a
whole uint8 batch already resized to ``image_size`` (e.g. from the disk cache):

1. random horizontal flip with probability ``flip``;
2. zero padding by ``pad`` pixels and a random crop back to the input size (offsets uniform in
   ``[0, 2 * pad]``, as ``T.Pad`` + ``T.RandomCrop``);
3. ``/ 255`` and normalisation with the spec's mean and std (as ``T.ToTensor`` + ``T.Normalize``);
4. random erasing with probability ``random_erasing`` of one rectangle (area fraction uniform in
   ``scale``, log-uniform aspect ratio in ``ratio``, up to 10 attempts to fit, as
   ``T.RandomErasing``), filled with ``erase_value`` (0, as the CPU transform).

Flip, padding and crop are a single gather with per-sample offsets, so the cost is one pass over
the batch whatever the parameters. Every sample draws its own flip, offsets and rectangle; a
seeded ``torch.Generator`` (on the batch's device) makes the result deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sarbridge.data.transforms import PreprocessSpec


def _rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, device=device, generator=generator)


class BatchAugment:
    """Flip, pad + random crop, normalise and random erasing of a uint8 image batch.

    Args:
        mean: per-channel normalisation mean (of ``[0, 1]`` pixels).
        std: per-channel normalisation std.
        flip: horizontal flip probability.
        pad: zero padding before the random crop (0 = no crop).
        random_erasing: probability of erasing one rectangle.
        erase_scale: range of the erased area as a fraction of the image.
        erase_ratio: range of the erased rectangle's aspect ratio (height / width).
        erase_value: value written into the erased rectangle (after normalisation).
        channels_last: return a ``torch.channels_last`` tensor.
    """

    def __init__(
        self,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        flip: float = 0.5,
        pad: int = 10,
        random_erasing: float = 0.5,
        erase_scale: tuple[float, float] = (0.02, 0.33),
        erase_ratio: tuple[float, float] = (0.3, 3.3),
        erase_value: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        if not (0.0 <= flip <= 1.0 and 0.0 <= random_erasing <= 1.0):
            raise ValueError(f"flip and random_erasing are probabilities in [0, 1], got {flip}, {random_erasing}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.flip = float(flip)
        self.pad = int(pad)
        self.random_erasing = float(random_erasing)
        self.erase_scale = (float(erase_scale[0]), float(erase_scale[1]))
        self.erase_ratio = (float(erase_ratio[0]), float(erase_ratio[1]))
        self.erase_value = float(erase_value)
        self.channels_last = channels_last

    @classmethod
    def from_spec(
        cls, spec: PreprocessSpec, flip: float = 0.5, pad: int = 10, random_erasing: float = 0.5,
        channels_last: bool = False,
    ) -> BatchAugment:
        """The GPU twin of ``spec.train_transform(flip, pad, random_erasing)``."""
        return cls(spec.mean, spec.std, flip, pad, random_erasing, channels_last=channels_last)

    @staticmethod
    def to_nhwc(images: torch.Tensor) -> torch.Tensor:
        """Accept (B, H, W, 3) or (B, 3, H, W); return a (B, H, W, 3) view."""
        if images.ndim != 4:
            raise ValueError(f"expected a (B, H, W, 3) or (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        if images.shape[1] == 3 and images.shape[-1] != 3:
            return images.permute(0, 2, 3, 1)
        if images.shape[-1] == 3:
            return images
        if images.shape[1] == 3:
            return images.permute(0, 2, 3, 1)
        raise ValueError(f"expected 3 channels first or last, got shape {tuple(images.shape)}")

    def geometry(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Flip + zero pad + random crop of an NHWC batch as one gather."""
        b, h, w, _ = x.shape
        dev, p = x.device, self.pad
        if p == 0 and self.flip == 0:
            return x
        flipped = _rand((b,), dev, generator) < self.flip if self.flip > 0 else torch.zeros(b, dtype=torch.bool, device=dev)
        if p > 0:
            # T.RandomCrop draws the row offset first, then the column offset, each in [0, 2p]
            off = torch.floor(_rand((b, 2), dev, generator) * (2 * p + 1)).long().clamp_(max=2 * p)
            x = torch.nn.functional.pad(x, (0, 0, p, p, p, p))  # zero pad H and W of NHWC
        else:
            off = torch.zeros(b, 2, dtype=torch.long, device=dev)
        rows = off[:, :1] + torch.arange(h, device=dev)  # (B, H) rows of the padded image
        cols = off[:, 1:] + torch.arange(w, device=dev)  # (B, W) columns of the padded, flipped image
        # flipping before padding: padded column c of the flipped image is padded column W-1+2p-c
        cols = torch.where(flipped[:, None], (w - 1 + 2 * p) - cols, cols)
        bidx = torch.arange(b, device=dev)[:, None, None]
        return x[bidx, rows[:, :, None], cols[:, None, :]]

    def erase(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random erasing of an NCHW float batch (in place), one rectangle per chosen sample."""
        b, _, h, w = x.shape
        dev, tries = x.device, 10
        apply = _rand((b,), dev, generator) < self.random_erasing
        u = _rand((b, tries, 4), dev, generator)
        area = h * w * (self.erase_scale[0] + (self.erase_scale[1] - self.erase_scale[0]) * u[..., 0])
        lo, hi = math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1])
        aspect = torch.exp(lo + (hi - lo) * u[..., 1])
        eh = torch.round(torch.sqrt(area * aspect)).long()
        ew = torch.round(torch.sqrt(area / aspect)).long()
        fits = (eh < h) & (ew < w)
        first = torch.argmax(fits.int(), dim=1)  # first attempt that fits (0 when none does)
        ok = apply & fits.any(dim=1)
        pick = first[:, None]
        eh, ew = eh.gather(1, pick)[:, 0], ew.gather(1, pick)[:, 0]
        ui, uj = u[..., 2].gather(1, pick)[:, 0], u[..., 3].gather(1, pick)[:, 0]
        top = torch.minimum(torch.floor(ui * (h - eh + 1).clamp_min(1)).long(), (h - eh).clamp_min(0))
        left = torch.minimum(torch.floor(uj * (w - ew + 1).clamp_min(1)).long(), (w - ew).clamp_min(0))
        ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_rows = (ar_h[None] >= top[:, None]) & (ar_h[None] < (top + eh)[:, None])
        in_cols = (ar_w[None] >= left[:, None]) & (ar_w[None] < (left + ew)[:, None])
        mask = (in_rows[:, :, None] & in_cols[:, None, :]) & ok[:, None, None]
        return x.masked_fill_(mask[:, None], self.erase_value)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8 batch.

        Args:
            images: uint8 (B, H, W, 3) or (B, 3, H, W), already at the training image size.
            generator: a ``torch.Generator`` on ``images.device`` (default: the global one).

        Returns:
            float32 (B, 3, H, W) normalised images (``channels_last`` memory format if asked).
        """
        x = self.geometry(self.to_nhwc(images), generator)
        dev = x.device
        mean = torch.tensor(self.mean, dtype=torch.float32, device=dev)[None, :, None, None]
        std = torch.tensor(self.std, dtype=torch.float32, device=dev)[None, :, None, None]
        out = x.permute(0, 3, 1, 2).to(torch.float32).div_(255).sub_(mean).div_(std)
        if self.random_erasing > 0:
            out = self.erase(out, generator)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return out.contiguous(memory_format=fmt)
