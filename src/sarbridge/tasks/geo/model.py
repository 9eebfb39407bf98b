"""The CMPC embedding network for SAR patch -> optical map localisation.

A modality-aware backbone whose *shallow* layers are modality-specific (separate optical and SAR
copies, each with its own BatchNorm statistics) and whose *deep* layers are shared, followed by a
projection head to a low-dimensional embedding (CMPC: ResNet-50, 2048 -> 512). Retrieval compares
L2-normalised embeddings by inner product.

Models never pick a device: the trainer moves them.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm.models
import torch
import torch.nn.functional as F
from torch import nn

from sarbridge.core.errors import ConfigError
from sarbridge.nn.backbones import ModalityAwareBackbone, load_pretrained

#: CMPC's modality-specific shallow layers of a (timm) ResNet: the stem and the first stage.
RESNET_MODALITY_SPECIFIC: tuple[str, ...] = ("conv1", "bn1", "layer1")

#: A tiny ResNet for tests and demos: ResNet-18 topology with one BasicBlock per stage and
#: widths 16-32-64-128 (timm ``ResNet`` kwargs ``layers``/``channels``/``stem_width``): feature dim
#: 128, 0.35 M parameters with the SAR copy of conv1/bn1/layer1 and a 32-d head; a forward pass of
#: 16 images at 64x64 takes ~25 ms on 2 CPU threads (eval, single modality; ~30 ms mixed).
#: Use as ``build_geo_model(**TINY_CNN, image_size=(64, 64), embed_dim=32)``.
TINY_CNN: dict[str, Any] = dict(
    backbone="resnet18",
    backbone_kwargs={"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16},
)


class GeoEmbeddingNet(nn.Module):
    """Modality-aware backbone + projection head to the retrieval embedding.

    The head is ``Dropout (optional) -> Linear(backbone.dim, embed_dim) -> BatchNorm1d (optional)``.
    With the BatchNorm, training batches need more than one sample.

    Args:
        backbone: the modality-aware backbone (no size token).
        embed_dim: embedding dimension (CMPC: 512).
        projection_bn: BatchNorm1d after the projection (the Linear then has no bias).
        dropout: dropout probability on the backbone features before the projection.

    Raises:
        ConfigError: ``embed_dim <= 0``, ``dropout`` outside ``[0, 1)`` or a backbone that needs
            the ship-size token.
    """

    def __init__(
        self,
        backbone: ModalityAwareBackbone,
        embed_dim: int = 512,
        projection_bn: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_head(embed_dim, dropout)
        if backbone.size_proj is not None:
            raise ConfigError("the geo-localisation model takes no ship-size token", "build the backbone with size_token=False")
        self.backbone = backbone
        self.dim = int(embed_dim)
        layers: list[nn.Module] = []
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(backbone.dim, self.dim, bias=not projection_bn))
        if projection_bn:
            layers.append(nn.BatchNorm1d(self.dim))
        self.head = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, modality: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of images ``image`` (B, 3, H, W) with modality indices ``modality`` (B,) (0 optical, 1 SAR).

        Returns:
            ``features``: pooled backbone features (B, backbone.dim); ``embedding``: the projected,
            *not* normalised embedding (B, dim).
        """
        feat = self.backbone(image, modality)
        return {"features": feat, "embedding": self.head(feat)}

    @torch.no_grad()
    def embed(self, image: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (B, dim) for inner-product retrieval, without gradients.

        Runs in the model's current mode: call ``eval()`` first for retrieval.
        """
        return F.normalize(self.forward(image, modality)["embedding"].float(), dim=1)


def _check_head(embed_dim: Any, dropout: Any) -> None:
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, numbers.Integral) or embed_dim <= 0:
        raise ConfigError(f"model.embed_dim must be a positive integer (got {embed_dim!r})", "use e.g. embed_dim=512")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1) (got {dropout!r})", "use e.g. dropout=0.0")


def _is_timm_resnet(name: str) -> bool:
    """Whether ``name`` is a model of timm's ResNet family (top-level ``conv1``/``bn1``/``layer1``)."""
    try:

        return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1] == "resnet"
    except Exception:
        return False


def _resolve_modality_specific(name: str, modality_specific: Sequence[str] | str | None) -> list[str]:
    """The list of module names to duplicate; ``"auto"`` picks CMPC's layers for ResNets."""
    if isinstance(modality_specific, str):
        if modality_specific == "auto":
            return list(RESNET_MODALITY_SPECIFIC) if _is_timm_resnet(name) else []
        modality_specific = [modality_specific]
    names = list(modality_specific or [])
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise ConfigError(f"model.modality_specific holds invalid module names {bad!r}", "list timm module names such as conv1, bn1, layer1")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"model.modality_specific names {', '.join(dupes)} more than once", "list each module once")
    nested = [(a, b) for a in names for b in names if a != b and b.startswith(a + ".")]
    if nested:
        a, b = nested[0]
        raise ConfigError(f"model.modality_specific names both '{a}' and its submodule '{b}'", f"keep only '{a}'")
    return names


def build_geo_model(
    backbone: str = "resnet50",
    image_size: Sequence[int] = (200, 200),
    embed_dim: int = 512,
    modality_specific: Sequence[str] | str | None = "auto",
    projection_bn: bool = True,
    dropout: float = 0.0,
    backbone_kwargs: dict[str, Any] | None = None,
    pretrained: str | Path | None = None,
    drop_path: float = 0.0,
) -> GeoEmbeddingNet:
    """Build the CMPC embedding network.

    Args:
        backbone: timm model name (CMPC: ``resnet50``).
        image_size: input ``[height, width]`` (used by ViTs; CNNs take any size).
        embed_dim: embedding dimension (CMPC: 512).
        modality_specific: CNN modules given a separate SAR copy. ``"auto"`` (default): CMPC's
            ``conv1, bn1, layer1`` for timm ResNets, the first convolution for other CNNs and a
            dual patch embedding for ViTs. ``None``/empty: a fully shared CNN, or a dual patch
            embedding for ViTs. A single name may be given as a string.
        projection_bn: BatchNorm1d after the projection.
        dropout: dropout before the projection.
        backbone_kwargs: extra ``timm.create_model`` arguments (see :data:`TINY_CNN`).
        pretrained: local ``.pth``/``.safetensors`` weights (timm or a sarbridge checkpoint),
            loaded through :func:`sarbridge.nn.backbones.load_pretrained`; plain timm weights
            initialise both the optical and the SAR copy of the modality-specific layers.
        drop_path: stochastic depth rate.

    Returns:
        A :class:`GeoEmbeddingNet` (no modality embedding, no size token).

    Raises:
        ConfigError: invalid sizes, unknown or overlapping module names, a ViT with
            modality-specific modules, or an unknown timm model.
        CheckpointError: unreadable or non-fitting ``pretrained`` weights.
    """
    _check_head(embed_dim, dropout)
    auto = isinstance(modality_specific, str) and modality_specific == "auto"
    names = _resolve_modality_specific(backbone, modality_specific)
    net = ModalityAwareBackbone(
        backbone,
        image_size=tuple(image_size),
        dual_patch_embed=auto and not names,
        modality_embed=False,
        size_token=False,
        drop_path=drop_path,
        backbone_kwargs=dict(backbone_kwargs or {}),
        modality_specific=names or None,
    )
    if net.is_vit and net.sar_patch_embed is None:  # explicit None/empty on a ViT: dual patch embedding
        net.sar_patch_embed = copy.deepcopy(net.net.patch_embed)
    if pretrained:

        load_pretrained(net, pretrained)
    return GeoEmbeddingNet(net, embed_dim=embed_dim, projection_bn=projection_bn, dropout=dropout)
