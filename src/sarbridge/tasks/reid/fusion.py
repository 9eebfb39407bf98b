"""MOS CDGF at inference: fuse each feature with those of its diffusion-generated cross-modal twins.

For an image of a fused modality (MOS: optical), K pseudo-images of the other modality are sampled
from a Brownian Bridge model, embedded as that modality, and

    ``f_fused = normalize((1 - tau) * f + tau * mean_k f(gen_k))``    (f, f(gen_k) L2-normalised).

Because every protocol reads features from one path-keyed bank, fusing the optical entries fuses the
optical queries in Optical->SAR, the optical gallery in SAR->Optical and both in ALL->ALL.
Generated images and their features are cached on disk, keyed by the checkpoints' contents and the
sampling settings, so a second evaluation does not sample again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sarbridge.core.errors import ConfigError
from sarbridge.core.progress import progress_bar
from sarbridge.core.utils import atomic_write, file_digest
from sarbridge.data.io import read_image
from sarbridge.data.records import MODALITY_INDEX, OPTICAL, SAR, Sample
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.bridge.translate import BridgeTranslator
from sarbridge.tasks.reid.config import FusionConfig

if TYPE_CHECKING:
    from sarbridge.tasks.reid.model import ReIDModel

DIRECTION_OF = {OPTICAL: "opt2sar", SAR: "sar2opt"}
Generator = Callable[[list[np.ndarray], str, list[str]], np.ndarray]
"""``generate(raw_images, modality, keys) -> uint8 (N, K, H, W, 3)``; ``keys`` seed each image's stream."""


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def embed_generated(
    model: ReIDModel,
    spec: PreprocessSpec,
    images: np.ndarray,
    modality: str,
    size: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """L2-normalised features of generated uint8 images (K, H, W, 3) of ``modality``.

    Generated images are already 8-bit, 3-channel: only the eval transform applies. ``size`` is
    the source chip's size-token input (the ship's physical size does not change with modality).
    """
    tf = spec.eval_transform()
    batch = torch.stack([tf(Image.fromarray(img)) for img in images]).to(device)
    mod = torch.full((len(images),), MODALITY_INDEX[modality], dtype=torch.long, device=device)
    feats = model.embed(batch, mod, size.expand(len(images), -1).to(device))
    return F.normalize(feats.float().cpu(), dim=1)


class GeneratedFeatureCache:
    """Mean feature of each sample's generated twins, computed once and kept on disk.

    Args:
        cache_dir: folder for ``images/*.npy`` (uint8 (K, H, W, 3) per sample) and feature files.
        key: identifies generator checkpoint + sampling settings.
    """

    def __init__(self, cache_dir: str | Path, key: str) -> None:
        self.root = Path(cache_dir) / key
        (self.root / "images").mkdir(parents=True, exist_ok=True)

    def image_path(self, sample: Sample) -> Path:
        return self.root / "images" / (hashlib.sha1(str(Path(sample.path).resolve()).encode()).hexdigest() + ".npy")

    def load_images(self, sample: Sample) -> np.ndarray | None:
        p = self.image_path(sample)
        if not p.is_file():
            return None
        try:
            return np.load(p)
        except (OSError, ValueError):
            return None  # a damaged cache entry is regenerated

    def save_images(self, sample: Sample, images: np.ndarray) -> None:
        def write(p: Path) -> None:
            with open(p, "wb") as fh:  # a file handle: np.save would append .npy to a path
                np.save(fh, images)

        atomic_write(self.image_path(sample), write)

    def feature_file(self, reid_key: str) -> Path:
        return self.root / f"features_{reid_key[:16]}.pt"


def noise_key(sample: Sample) -> str:
    """The key of a sample's generation noise: its folder and file name, not its absolute path, so the
    same data set gives the same generated twins (and fused metrics) wherever it is stored."""
    p = Path(sample.path)
    return f"{p.parent.name}/{p.name}"


def generated_features(
    model: ReIDModel,
    spec: PreprocessSpec,
    samples: Sequence[Sample],
    generate: Generator,
    cache: GeneratedFeatureCache,
    device: torch.device,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean L2-normalised feature of each sample's generated images (cached)."""
    target = SAR if all(s.modality == OPTICAL for s in samples) else OPTICAL
    reid_key = model_digest(model)
    ffile = cache.feature_file(reid_key)
    known: dict[str, torch.Tensor] = torch.load(ffile, weights_only=True) if ffile.is_file() else {}
    todo = [s for s in samples if s.path not in known]
    bar = progress_bar(total=len(todo), desc="generating cross-modal twins", disable=not progress or not todo,
               leave=False, dynamic_ncols=True)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        cached = {s.path: cache.load_images(s) for s in chunk}
        missing = [s for s in chunk if cached[s.path] is None]
        if missing:
            raws = [read_image(s.path) for s in missing]
            gen = generate(raws, missing[0].modality, [noise_key(s) for s in missing])  # (N, K, H, W, 3)
            for s, imgs in zip(missing, gen):
                cache.save_images(s, imgs)
                cached[s.path] = imgs
        for s in chunk:
            raw_shape = read_image(s.path).shape
            size = torch.from_numpy(spec.size_features(raw_shape[0], raw_shape[1], s.modality))
            images = cached[s.path]
            assert images is not None  # generated above when it was not cached
            known[s.path] = embed_generated(model, spec, images, target, size, device).mean(0)
        bar.update(len(chunk))
    bar.close()
    if todo:
        atomic_write(ffile, lambda p: torch.save(known, p))
    return {s.path: known[s.path] for s in samples}


def fuse(feature: torch.Tensor, generated_mean: torch.Tensor, tau: float) -> torch.Tensor:
    """``normalize((1 - tau) * normalize(f) + tau * g)`` for (D,) or (N, D) tensors."""
    f = F.normalize(feature.float(), dim=-1)
    return F.normalize((1.0 - tau) * f + tau * generated_mean.float(), dim=-1)


def check_fusion_ready(fusion: FusionConfig, skip: Sequence[str] = ()) -> None:
    """Fail early (before hours of training) when enabled fusion lacks a generator checkpoint.

    Args:
        fusion: the fusion section.
        skip: checkpoint values not to look for on disk (e.g. one that a later step will train).

    Raises:
        ConfigError: naming the missing key or file.
    """
    if not fusion.enabled:
        return
    for modality in fusion.modalities:
        direction = DIRECTION_OF[modality]
        ckpt = fusion.opt2sar_checkpoint if modality == OPTICAL else fusion.sar2opt_checkpoint
        if not ckpt:
            raise ConfigError(
                f"fusion of {modality} features needs fusion.{direction}_checkpoint",
                f"train one with 'sarbridge diffusion-train --direction {direction}' and set its best.pt, "
                "or set fusion.enabled=false",
            )
        if ckpt not in skip and not Path(ckpt).is_file():
            raise ConfigError(f"fusion.{direction}_checkpoint '{ckpt}' not found", "pass an existing best.pt")


def fuse_bank(
    model: ReIDModel,
    spec: PreprocessSpec,
    bank: dict[str, torch.Tensor],
    samples: Sequence[Sample],
    fusion: FusionConfig,
    device: torch.device,
    cache_dir: str | Path,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Replace the features of samples of ``fusion.modalities`` by their fused features.

    Args:
        fusion: a :class:`~sarbridge.core.config.FusionConfig`.
        cache_dir: default cache folder when ``fusion.cache_dir`` is unset.

    Raises:
        ConfigError: a needed generator checkpoint is not configured or has the wrong direction.
    """

    check_fusion_ready(fusion)
    out = dict(bank)
    for modality in fusion.modalities:
        direction = DIRECTION_OF[modality]
        ckpt = fusion.opt2sar_checkpoint if modality == OPTICAL else fusion.sar2opt_checkpoint
        assert ckpt is not None  # check_fusion_ready: every fused modality has its checkpoint
        translator = BridgeTranslator.from_checkpoint(ckpt, device=str(device))
        if translator.direction != direction:
            raise ConfigError(
                f"fusion.{direction}_checkpoint '{ckpt}' translates {translator.direction}",
                f"give a {direction} checkpoint",
            )
        targets = [s for s in samples if s.modality == modality]
        if not targets:
            continue
        key = f"{direction}_{file_digest(ckpt)[:16]}_s{fusion.steps}_k{fusion.samples}_seed{fusion.seed}"
        cache = GeneratedFeatureCache(fusion.cache_dir or cache_dir, key)

        def generate(raws: list[np.ndarray], mod: str, keys: list[str], tr: Any = translator) -> np.ndarray:
            return tr.translate(raws, modality=mod, samples=fusion.samples, steps=fusion.steps, seed=fusion.seed,
                                keys=keys)

        gen = generated_features(model, spec, targets, generate, cache, device, progress=progress)
        for s in targets:
            out[s.path] = fuse(bank[s.path], gen[s.path], fusion.tau)
    return out
