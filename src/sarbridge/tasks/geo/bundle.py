"""The trained localisation model as one file: encoder + graph refiner + config + preprocessing.

``sarbridge geo train`` writes ``geo_model.pt`` (task ``geo``) in the run folder; ``index build --map``,
``geo locate`` and ``geo evaluate`` read it. It uses the one checkpoint format of
:mod:`sarbridge.core.checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sarbridge.core.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from sarbridge.core.config import config_from_dict, config_to_dict
from sarbridge.core.errors import CheckpointError
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.geo.config import GeoConfig
from sarbridge.tasks.geo.model import GeoEmbeddingNet, build_geo_model
from sarbridge.tasks.geo.refine import LocationRefiner
from sarbridge.tasks.geo.register.dense_matcher import DenseMatcher

TASK = "geo"


def build_encoder(cfg: GeoConfig, load_pretrained: bool = True) -> GeoEmbeddingNet:
    """The embedding network a config describes (random init unless ``model.pretrained`` is a local file)."""
    m = cfg.model
    return build_geo_model(
        backbone=m.backbone, image_size=tuple(cfg.data.image_size), embed_dim=m.embed_dim,
        modality_specific=tuple(m.modality_specific) if m.modality_specific else None,
        projection_bn=m.projection_bn, dropout=m.dropout, backbone_kwargs=dict(m.backbone_kwargs),
        pretrained=m.pretrained if load_pretrained else None, drop_path=m.drop_path,
    )


def build_refiner(cfg: GeoConfig, coord_scale: float | None) -> nn.Module:
    """The location-aware graph network a config describes."""
    r = cfg.refine
    return LocationRefiner(cfg.model.embed_dim, hidden=r.hidden, layers=r.layers, heads=r.heads, edge_k=r.edge_k,
                           sigma=r.sigma, use_coords=r.use_coords, use_attention=r.use_attention, dropout=r.dropout,
                           coord_scale=coord_scale)


def arch_of(cfg: GeoConfig) -> dict[str, Any]:
    """What must match for encoder weights to load."""
    m = cfg.model
    return {"backbone": m.backbone, "backbone_kwargs": dict(m.backbone_kwargs), "image_size": list(cfg.data.image_size),
            "embed_dim": m.embed_dim, "modality_specific": list(m.modality_specific), "projection_bn": m.projection_bn}


@dataclass
class GeoModel:
    """A loaded ``geo_model.pt``."""

    encoder: GeoEmbeddingNet
    refiner: nn.Module | None
    spec: PreprocessSpec
    cfg: GeoConfig
    info: dict[str, Any]
    path: Path
    matcher: DenseMatcher | None = None

    @property
    def patch_size_m(self) -> float | None:
        return self.info.get("patch_size_m")


def save_geo_model(path: str | Path, cfg: GeoConfig, encoder: nn.Module, refiner: nn.Module | None,
                   info: dict[str, Any], matcher: DenseMatcher | None = None) -> Path:
    """Write the inference bundle atomically (``matcher``: the dense matcher of ``eval.register.method: learned``)."""
    state = {
        "task": TASK, "epoch": info.get("epoch", -1), "config": config_to_dict(cfg), "arch": arch_of(cfg),
        "preprocess": cfg.data.spec().to_dict(), "model": encoder.state_dict(),
        "refiner": refiner.state_dict() if refiner is not None else None, "info": dict(info),
        "matcher": ({"channels": matcher.channels, "dim": matcher.dim, "state": matcher.state_dict()}
                    if matcher is not None else None),
    }
    p = Path(path)
    save_checkpoint(state, p)
    return p


def load_geo_model(path: str | Path) -> GeoModel:
    """Rebuild encoder and refiner (eval mode, CPU) from ``geo_model.pt``.

    Raises:
        CheckpointError: missing/damaged file, another task's checkpoint, weights that do not fit.
    """
    p = Path(path)
    state = load_checkpoint(p, task=TASK)
    try:
        cfg = config_from_dict(state["config"], GeoConfig)
    except Exception as exc:
        raise CheckpointError(f"checkpoint '{p}' holds an unreadable config ({str(exc)[:80]})",
                              "retrain with this sarbridge version") from None
    cfg.model.pretrained = None
    encoder = build_encoder(cfg, load_pretrained=False)
    load_model_state(encoder, state["model"], str(p))
    encoder.eval()
    info = dict(state.get("info") or {})
    refiner = None
    if state.get("refiner") is not None:
        refiner = build_refiner(cfg, info.get("patch_size_m"))
        load_model_state(refiner, state["refiner"], str(p))
        refiner.eval()
    matcher = None
    saved = state.get("matcher")
    if isinstance(saved, dict) and "state" in saved:
        matcher = DenseMatcher(int(saved.get("channels", 16)), int(saved.get("dim", 16)))
        load_model_state(matcher, saved["state"], str(p))
        matcher.eval()
    return GeoModel(encoder, refiner, PreprocessSpec.from_dict(state["preprocess"]), cfg, info, p, matcher)
