"""Import the released TransOSS / MOS re-identification checkpoints as sarbridge checkpoints.

The public TransOSS code (``model/make_model.py``, ``build_transformer``; ``model/backbones/
vit_transoss.py``, ``TransOSS``) saves ``model.state_dict()`` of a ViT ``base`` plus a BNNeck and
a bias-free classifier. Its keys map onto :class:`~sarbridge.tasks.reid.model.ReIDModel` as:

=====================================  ===========================================  =========================
released key                           sarbridge key                                note
=====================================  ===========================================  =========================
``base.cls_token`` / ``pos_embed``     ``backbone.net.cls_token`` / ``pos_embed``   ``(1, 1 + N, D)``
``base.patch_embed.proj.*``            ``backbone.net.patch_embed.proj.*``          optical patch embedding
``base.patch_embed_SAR.proj.*``        ``backbone.sar_patch_embed.proj.*``          SAR patch embedding
``base.mie_embed``                     ``backbone.modality_embed``                  ``(2, 1, D)`` -> ``(2, D)``
``base.wh_embed.linear_layer.*``       ``backbone.size_proj.*``                     ship-size token ``3 -> D``
``base.blocks.*`` / ``base.norm.*``    ``backbone.net.blocks.*`` / ``norm.*``       same timm layout
``bottleneck.*``                       ``bottleneck.*``                             BNNeck
``classifier.weight``                  ``classifier.weight``                        ``(num_classes, D)``
``base.fc.*``, ``logit_scale``         dropped                                      unused ImageNet head,
                                                                                    pretraining temperature
=====================================  ===========================================  =========================

Modality index 0 is optical and 1 SAR in both codes (TransOSS routes ``camera_id == 0`` through
``patch_embed``). TransOSS appends the size token after the position embedding and sarbridge
inserts it after the CLS token; neither gives it a position, so the CLS output is the same.
The modality-embedding coefficient (``MIE_COE``, 3.0 in the released HOSS config) is no tensor:
it comes from ``model.modality_embed_scale``. Released configs use non-overlapping 16-pixel
patches (``STRIDE_SIZE: [16, 16]``) at 256 x 128; other strides do not fit a timm ViT.

MOS builds on the TransOSS code; its public model code was not available when this was written,
so MOS checkpoints are assumed to use the same key names (the converter refuses any key it does
not know, naming it). MOS differs in its SAR preprocessing (percentile, alpha 5), which the
imported checkpoint records; its feature fusion (CDGF) is an evaluation-time option
(``--set fusion.enabled=true fusion.opt2sar_checkpoint=...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sarbridge.core.checkpoint import load_model_state, save_checkpoint
from sarbridge.core.config import config_from_dict, config_to_dict, merge_dicts, parse_overrides
from sarbridge.core.errors import CheckpointError, ConfigError
from sarbridge.nn.backbones import read_state_dict
from sarbridge.tasks.reid.config import ExperimentConfig, load_reid_config
from sarbridge.tasks.reid.model import build_reid_model
from sarbridge.tasks.reid.task import arch_signature

#: the released checkpoints this module converts
SOURCES = ("transoss", "mos")
#: TransOSS / MOS normalise with the ImageNet statistics (``INPUT.PIXEL_MEAN`` / ``PIXEL_STD``)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
#: the SAR scaling each source trains with
SOURCE_DATA: dict[str, dict[str, Any]] = {
    "transoss": {"sar_preprocess": "max"},
    "mos": {"sar_preprocess": "percentile", "sar_alpha": 5.0},
}
#: released prefixes -> sarbridge prefixes (first match wins)
KEY_PREFIXES = (
    ("base.patch_embed_SAR.", "backbone.sar_patch_embed."),
    ("base.wh_embed.linear_layer.", "backbone.size_proj."),
    ("base.patch_embed.", "backbone.net.patch_embed."),
    ("base.blocks.", "backbone.net.blocks."),
    ("base.norm.", "backbone.net.norm."),
    ("base.cls_token", "backbone.net.cls_token"),
    ("base.pos_embed", "backbone.net.pos_embed"),
    ("bottleneck.", "bottleneck."),
    ("classifier.weight", "classifier.weight"),
)
#: released tensors with no counterpart (the ViT's unused ImageNet head, the pretraining temperature)
DROPPED_PREFIXES = ("base.fc.", "logit_scale")
#: ViT width -> timm backbone of the released models (other widths: model.backbone from the config)
BACKBONES = {768: "vit_base_patch16_224", 1024: "vit_large_patch16_224"}


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ConfigError(f"unknown checkpoint source '{source}'", f"use one of: {', '.join(SOURCES)}")


def convert_released_state(sd: dict[str, torch.Tensor], source: str = "transoss") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename the tensors of a released TransOSS / MOS state dict to :class:`ReIDModel` keys.

    Args:
        sd: the released state dict (``module.`` prefixes already removed).
        source: ``transoss`` or ``mos``.

    Returns:
        ``(sarbridge state dict, dropped released keys)``.

    Raises:
        CheckpointError: not a released re-ID checkpoint (no ``base.*`` ViT, no BNNeck), or a key
            the mapping does not know.
    """
    _check_source(source)
    if not any(k.startswith("base.") for k in sd):
        first = next(iter(sd), "<none>")
        what = "already a sarbridge checkpoint" if first.startswith(("backbone.", "net.")) else f"first key '{first}'"
        raise CheckpointError(f"not a released {source} re-ID checkpoint (no 'base.*' ViT weights; {what})",
                              "pass the .pth the TransOSS / MOS code saved (model.state_dict() of build_transformer)")
    if "bottleneck.weight" not in sd:
        raise CheckpointError(f"released {source} weights hold no BNNeck ('bottleneck.*'): a pretraining checkpoint, "
                              "not a re-ID one", "pass the fine-tuned re-ID checkpoint")
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in sd.items():
        if key.startswith(DROPPED_PREFIXES):
            dropped.append(key)
            continue
        if key == "base.mie_embed":
            if value.ndim != 3 or value.shape[0] != 2 or value.shape[1] != 1:
                raise CheckpointError(f"released modality embedding 'base.mie_embed' has shape {tuple(value.shape)}",
                                      "expected (2, 1, D): one embedding for optical, one for SAR")
            out["backbone.modality_embed"] = value[:, 0, :].clone()
            continue
        for old, new in KEY_PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise CheckpointError(f"released {source} checkpoint has a key the import does not know: '{key}'",
                                  "only TransOSS-layout ViT checkpoints (softmax classifier) can be imported")
    return out, dropped


def _released_model_config(sd: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """The ``model`` / ``data`` config entries a released state dict implies (the backbone only
    for the released widths; otherwise it comes from ``--config`` / overrides)."""
    model: dict[str, Any] = {
        "pretrained": None,
        "centre_features": False,  # the released evaluation compares the raw pre-neck features
        "dual_patch_embed": "base.patch_embed_SAR.proj.weight" in sd,
        "modality_embed": "base.mie_embed" in sd,
        "size_token": "base.wh_embed.linear_layer.weight" in sd,
    }
    dim = int(sd["base.cls_token"].shape[-1]) if "base.cls_token" in sd else 0
    depth = len({k.split(".")[2] for k in sd if k.startswith("base.blocks.")})
    if dim in BACKBONES:
        model["backbone"] = BACKBONES[dim]
        model["backbone_kwargs"] = {} if (dim, depth) in ((768, 12), (1024, 24)) else {"depth": depth}
    return {"name": f"{source}_import", "model": model,
            "data": {"format": "hoss", "image_size": [256, 128], **SOURCE_DATA[source]}}


def import_released_checkpoint(path: str | Path, out: str | Path, source: str = "transoss",
                               config: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Convert a released TransOSS / MOS checkpoint into a sarbridge re-ID checkpoint.

    ``sarbridge evaluate --model OUT --data HOSS`` then re-evaluates the published weights under
    this package's protocol (features before the BNNeck, not centred, ImageNet normalisation: as
    released; ``--set model.centre_features=true`` evaluates them centred like sarbridge's own models).

    Args:
        path: the released ``.pth`` (a state dict, possibly under ``state_dict`` / ``model``).
        out: the sarbridge checkpoint to write.
        source: ``transoss`` or ``mos`` (sets the SAR preprocessing the weights were trained with).
        config: optional re-ID YAML to take the rest of the config from (its model must fit).
        overrides: ``key=value`` overrides, e.g. ``model.modality_embed_scale=1.5``.

    Returns:
        ``{"out", "source", "num_classes", "loaded", "dropped"}``.

    Raises:
        CheckpointError: unreadable file, not a released re-ID checkpoint, or tensors that do not
            fit the model the config describes.
        ConfigError: unknown source or invalid config/overrides.
    """
    _check_source(source)
    p = Path(path)
    sd = read_state_dict(p)
    converted, dropped = convert_released_state(sd, source)
    implied = _released_model_config(sd, source)
    base = config_to_dict(load_reid_config(config) if config else ExperimentConfig())
    if config:
        implied = {"name": implied["name"], "model": {"pretrained": None, "centre_features": False},
                   "data": SOURCE_DATA[source]}
    cfg_dict = merge_dicts(merge_dicts(base, implied), parse_overrides(overrides))
    cfg = config_from_dict(cfg_dict, ExperimentConfig)
    cfg.validate()
    num_classes = int(converted["classifier.weight"].shape[0]) if "classifier.weight" in converted else 0
    model = build_reid_model(cfg.model, cfg.data.image_size, num_classes)
    own = model.state_dict()
    key = "backbone.net.pos_embed"
    if key in converted and key in own and converted[key].shape != own[key].shape:
        raise CheckpointError(
            f"released position embedding has {converted[key].shape[1] - 1} patches, a {cfg.data.image_size[0]} x "
            f"{cfg.data.image_size[1]} input with 16-pixel patches {own[key].shape[1] - 1}",
            "set data.image_size to the released SIZE_TEST (overlapping patches, STRIDE_SIZE < 16, are not supported)")
    load_model_state(model, converted, str(p))  # strict: every tensor of the model must come from the file
    spec = cfg.data.spec()
    spec.mean, spec.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    save_checkpoint({
        "task": "reid", "epoch": 0, "model": model.state_dict(), "config": config_to_dict(cfg),
        "preprocess": spec.to_dict(), "num_classes": num_classes, "arch": arch_signature(cfg),
        "imported_from": {"source": source, "path": str(p), "dropped": dropped},
    }, out)
    return {"out": str(out), "source": source, "num_classes": num_classes, "loaded": len(converted), "dropped": dropped}


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SOURCES", "convert_released_state", "import_released_checkpoint"]
