"""Tiny, fast re-identification experiment configs shared by the tests (importable from every test folder)."""

from __future__ import annotations

from pathlib import Path

from sarbridge.resources import resource_path
from sarbridge.tasks.reid.config import ExperimentConfig, load_reid_config

HOSS_SAMPLE = resource_path("hoss-sample") / "HOSS"


def tiny_overrides(root: Path | str = HOSS_SAMPLE, epochs: int = 3) -> list[str]:
    return [
        f"data.root={root}",
        "data.image_size=[32,16]",
        "data.sampler.num_ids=4",
        "data.sampler.num_instances=2",
        "data.augment.pad=2",
        "model.backbone=vit_tiny_patch16_224",
        "model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2, patch_size: 8}",
        "optim.name=sgd",
        "optim.lr=0.01",
        "optim.warmup_epochs=1",
        f"optim.epochs={epochs}",
        "device=cpu",
    ]


def tiny_config(root: Path | str = HOSS_SAMPLE, epochs: int = 3, extra: list[str] | None = None) -> ExperimentConfig:
    return load_reid_config(resource_path("demo.yaml"), tiny_overrides(root, epochs) + list(extra or []))
