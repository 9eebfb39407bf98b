"""Inference: turn optical chips into pseudo-SAR (or SAR chips into pseudo-optical) with a trained bridge.

Example::

    from sarbridge.tasks.bridge.translate import BridgeTranslator

    tr = BridgeTranslator.from_checkpoint("runs/bbdm/best.pt")         # opt2sar model
    fake_sar = tr.translate(optical_uint8, samples=5, steps=200, seed=0)  # (N, 5, H, W, 3) uint8

Inputs are resized to the model resolution; outputs are at the model resolution. Every input gets
its own random stream derived from ``(seed, index)`` (or ``(seed, key)`` with ``keys=``, e.g. file
paths), so an image's samples do not depend on the batch size or on the other images of the call
(use ``start_index`` or ``keys`` when translating a long list in chunks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.checkpoint import load_checkpoint, load_model_state
from sarbridge.core.errors import CheckpointError, DataError, SarbridgeError
from sarbridge.core.progress import progress_bar
from sarbridge.core.utils import resolve_device
from sarbridge.data.io import read_image
from sarbridge.data.records import SAR, parse_modality
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.bridge.model import (
    BridgeDenoiser,
    BrownianBridge,
    direction_modalities,
    tensor_to_uint8,
    uint8_to_tensor,
    unet_from_config_dict,
)
from sarbridge.tasks.bridge.pairs import prepare_uint8, resize_uint8

TASK_NAME = "diffusion"
ImageInput = np.ndarray | tuple[np.ndarray, str] | str | Path


def modality_from_name(path: str | Path) -> str | None:
    """The modality a HOSS-style name states by its last ``_`` token (``..._RGB`` / ``..._SAR``), or None."""
    stem = Path(path).stem
    _, sep, tail = stem.rpartition("_")
    if not sep:
        return None
    try:
        return parse_modality(tail)
    except SarbridgeError:
        return None


def input_generator(seed: int, key: int | str) -> torch.Generator:
    """The CPU random stream of an input under ``seed``: ``key`` is its index, or any string
    (e.g. its file path) when the stream must not depend on the input's position."""
    if isinstance(key, str):
        words = [int(w) for w in np.frombuffer(hashlib.sha256(key.encode("utf-8")).digest()[:8], dtype=np.uint32)]
    else:
        words = [int(key)]
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) << 31 ^ int(state[1]))


class BridgeTranslator:
    """A trained bridge with its preprocessing and sampler defaults.

    Args:
        model: the denoiser (``model(x_t, t, y)``), weights loaded.
        bridge: the schedule.
        spec: preprocessing of raw inputs (SAR conversion rule).
        direction: ``opt2sar`` or ``sar2opt``.
        resolution: (H, W) of the model.
        sampler: defaults ``sample_steps``, ``skip_type``, ``eta``, ``clip_denoised``.
        device: where to run.
        info: checkpoint facts (path, epoch, EMA) for reports.
    """

    def __init__(
        self,
        model: BridgeDenoiser,
        bridge: BrownianBridge,
        spec: PreprocessSpec,
        direction: str,
        resolution: Sequence[int],
        sampler: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        info: dict[str, Any] | None = None,
    ) -> None:
        self.source_modality, self.target_modality = direction_modalities(direction)
        self.direction = direction
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.model = model.to(self.device).eval()
        self.bridge = bridge
        self.spec = spec
        self.resolution = [int(resolution[0]), int(resolution[1])]
        s = dict(sampler or {})
        self.sample_steps = int(s.get("sample_steps", 200))
        self.skip_type = str(s.get("skip_type", "uniform"))
        self.eta = float(s.get("eta", 1.0))
        self.clip_denoised = bool(s.get("clip_denoised", True))
        self.info = dict(info or {})

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", use_ema: bool = True) -> BridgeTranslator:
        """Rebuild the translator from a ``diffusion`` checkpoint alone.

        Args:
            path: ``best.pt`` or ``last.pt`` of ``sarbridge diffusion-train``.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            use_ema: sample with the EMA weights when the checkpoint has them.

        Raises:
            CheckpointError: missing, foreign or inconsistent file.
        """
        state = load_checkpoint(path, task=TASK_NAME)
        try:
            arch = state["arch"]
            unet = unet_from_config_dict(arch["unet"])
            model = BridgeDenoiser(unet, arch.get("condition", "concat"))
            bridge = BrownianBridge.from_config(state["bridge"])
            spec = PreprocessSpec.from_dict(state["preprocess"])
            direction = state["direction"]
            resolution = state["resolution"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint '{path}' lacks diffusion metadata ({exc})",
                                  "pass a checkpoint written by 'sarbridge diffusion-train'") from None
        weights = dict(state["model"])
        ema = state.get("ema") if use_ema else None
        if ema is not None:
            weights.update({k: v for k, v in ema["shadow"].items() if k in weights})
        load_model_state(model, weights, str(path))
        info = {"checkpoint": str(path), "epoch": state.get("epoch"), "ema": ema is not None,
                "train_step": state.get("train_step")}
        return cls(model, bridge, spec, direction, resolution, state["bridge"], resolve_device(device), info)

    # ---- inputs ------------------------------------------------------------------------------------

    def _check_modality(self, modality: str, where: str) -> None:
        mod = parse_modality(modality)
        if mod != self.source_modality:
            other = "sar2opt" if self.direction == "opt2sar" else "opt2sar"
            raise DataError(
                f"{where} is {mod} but this {self.direction} model translates {self.source_modality} images",
                f"pass {self.source_modality} images or a {other} checkpoint",
            )

    def prepare_one(self, item: ImageInput, modality: str | None = None, where: str = "input") -> np.ndarray:
        """One input -> uint8 ``(H, W, 3)`` at the model resolution.

        Items: a file path (modality checked against a ``_RGB``/``_SAR`` name suffix when present),
        an ``(array, modality)`` tuple (raw pixels converted with the checkpoint's rule), or an array
        of the source modality (uint8 ``(H, W, 3)`` used as is, anything else converted).
        """
        if isinstance(item, (str, Path)):
            named = modality_from_name(item)
            if named is not None:
                self._check_modality(named, f"'{item}'")
            if modality is not None:
                self._check_modality(modality, f"'{item}'")
            return prepare_uint8(read_image(item), self.source_modality, self.spec, self.resolution)
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise DataError(f"{where} is a tuple but not (array, modality)", "pass (array, 'optical'|'sar')")
            arr, mod = item
            self._check_modality(mod, where)
        else:
            arr = item
            if modality is not None:
                self._check_modality(modality, where)
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        arr = np.asarray(arr)
        if arr.ndim not in (2, 3) or arr.size == 0 or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
            raise DataError(f"{where} has shape {arr.shape}", "pass (H, W) or (H, W, 3) images")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise DataError(f"{where} contains NaN or infinite values", "fill or mask them first")
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        return prepare_uint8(arr, self.source_modality, self.spec, self.resolution)

    def prepare(self, images: np.ndarray | Sequence[ImageInput], modality: str | None = None) -> np.ndarray:
        """Inputs -> uint8 ``(N, H, W, 3)`` at the model resolution (see :meth:`prepare_one`)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            if modality is not None:
                self._check_modality(modality, "the input batch")
            if images.dtype != np.uint8 or images.shape[-1] != 3:
                raise DataError(f"an array batch must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}",
                                "pass uint8 images, or a list of (raw_array, modality) tuples")
            return np.stack([resize_uint8(im, self.resolution) for im in images]) if len(images) else \
                np.zeros((0, *self.resolution, 3), np.uint8)
        if isinstance(images, (np.ndarray, str, Path, tuple)):
            images = [images]  # a single image
        out = [self.prepare_one(item, modality, f"input {i}") for i, item in enumerate(images)]
        return np.stack(out) if out else np.zeros((0, *self.resolution, 3), np.uint8)

    # ---- sampling ----------------------------------------------------------------------------------

    def translate(
        self,
        images: np.ndarray | Sequence[ImageInput],
        samples: int = 1,
        steps: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        eta: float | None = None,
        clip_denoised: bool | None = None,
        modality: str | None = None,
        start_index: int = 0,
        keys: Sequence[int | str] | None = None,
        grey_sar: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        """Translate source-modality images into ``samples`` target-modality images each.

        Args:
            images: uint8 ``(N, H, W, 3)`` array, or a list of items (see :meth:`prepare_one`).
            samples: K samples per input.
            steps: sampler steps (network evaluations); default: the checkpoint's ``sample_steps``.
            seed: base seed; input ``i`` uses the stream of ``(seed, start_index + i)``.
            batch_size: inputs per network batch (each contributes K rows).
            eta, clip_denoised: sampler options (default: the checkpoint's).
            modality: the modality of the inputs, checked against the model's source modality.
            start_index: index of the first input (for chunked calls).
            keys: one key per input (e.g. its file path) deriving its random stream instead of its
                index, so that an image's samples do not depend on which other images are in the call.
            grey_sar: average the channels of generated SAR (real SAR inputs of the re-identification
                model have three equal channels).
            progress: progress bar over batches.

        Returns:
            uint8 ``(N, K, H, W, 3)`` at the model resolution.
        """
        if samples < 1:
            raise SarbridgeError(f"samples must be >= 1, got {samples}", "pass --samples 1 or more")
        if batch_size < 1:
            raise SarbridgeError(f"batch_size must be >= 1, got {batch_size}", "pass a positive batch size")
        steps = self.sample_steps if steps is None else int(steps)
        if steps < 1:
            raise SarbridgeError(f"steps must be >= 1, got {steps}", "pass --steps 1 or more")
        prepared = self.prepare(images, modality)
        if keys is not None and len(keys) != len(prepared):
            raise SarbridgeError(f"{len(keys)} keys for {len(prepared)} images", "pass one key per image")
        h, w = self.resolution
        out = np.zeros((len(prepared), samples, h, w, 3), np.uint8)

        starts = range(0, len(prepared), batch_size)
        for s in progress_bar(starts, desc=f"{self.direction} ({steps} steps)", disable=not progress, leave=False,
                      dynamic_ncols=True):
            chunk = prepared[s:s + batch_size]
            y = uint8_to_tensor(chunk).to(self.device)
            gens = [input_generator(seed, keys[s + i] if keys is not None else start_index + s + i)
                    for i in range(len(chunk))]
            x = self.bridge.sample(self.model, y, steps=steps, samples=samples, generator=gens,
                                   eta=self.eta if eta is None else eta,
                                   clip_denoised=self.clip_denoised if clip_denoised is None else clip_denoised,
                                   skip_type=self.skip_type)
            if grey_sar and self.target_modality == SAR:
                x = x.mean(dim=2, keepdim=True).expand_as(x)
            out[s:s + len(chunk)] = tensor_to_uint8(x)
        return out

    def translate_files(self, paths: Sequence[str | Path], **kwargs: Any) -> np.ndarray:
        """:meth:`translate` for image files (modality checked by the HOSS name suffix when present)."""
        return self.translate([Path(p) for p in paths], **kwargs)
