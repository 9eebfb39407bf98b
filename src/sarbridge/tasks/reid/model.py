"""The re-identification model: modality-aware backbone + BNNeck + identity classifier."""

from __future__ import annotations

import torch
from torch import nn

from sarbridge.nn.backbones import ModalityAwareBackbone, load_pretrained
from sarbridge.tasks.reid.config import ModelConfig


class ReIDModel(nn.Module):
    """Backbone, BNNeck (BatchNorm without bias shift) and a bias-free linear classifier.

    ``forward`` returns a dict: ``features`` (before the neck; used for retrieval and the triplet
    loss), ``bn_features`` and, when there is a classifier, ``logits``.
    """

    def __init__(self, backbone: ModalityAwareBackbone, num_classes: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.bottleneck = nn.BatchNorm1d(backbone.dim)
        self.bottleneck.bias.requires_grad_(False)
        nn.init.constant_(self.bottleneck.weight, 1.0)
        nn.init.constant_(self.bottleneck.bias, 0.0)
        self.classifier = nn.Linear(backbone.dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    @property
    def dim(self) -> int:
        return self.backbone.dim

    def forward(self, image: torch.Tensor, modality: torch.Tensor, size: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feat = self.backbone(image, modality, size)
        out = {"features": feat}
        if self.training or self.classifier is not None:
            bn = self.bottleneck(feat)
            out["bn_features"] = bn
            if self.classifier is not None:
                out["logits"] = self.classifier(bn)
        return out

    @torch.no_grad()
    def embed(self, image: torch.Tensor, modality: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieval features (before the neck), without gradients."""
        return self.backbone(image, modality, size)


def build_reid_model(model_cfg: ModelConfig, image_size: list[int], num_classes: int) -> ReIDModel:
    """Build a :class:`ReIDModel` from a ``ModelConfig`` (weights loaded if ``pretrained`` is set)."""
    backbone = ModalityAwareBackbone(
        model_cfg.backbone,
        image_size=image_size,
        dual_patch_embed=model_cfg.dual_patch_embed,
        modality_embed=model_cfg.modality_embed,
        modality_embed_scale=model_cfg.modality_embed_scale,
        size_token=model_cfg.size_token,
        drop_path=model_cfg.drop_path,
        backbone_kwargs=model_cfg.backbone_kwargs,
    )
    if model_cfg.pretrained:
        load_pretrained(backbone, model_cfg.pretrained)
    return ReIDModel(backbone, num_classes)
