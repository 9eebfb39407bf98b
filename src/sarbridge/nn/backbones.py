"""Modality-aware backbones: any timm model plus the TransOSS additions.

* separate optical and SAR patch embeddings (ViT) or stems (CNNs: the first convolution),
* a learned modality embedding (scaled, 3.0 in TransOSS) added to the position embedding (ViT),
* a ship-size token ``Linear(3 -> D)`` of the chip's physical width/height and aspect ratio,
  inserted after the CLS token (ViT) or added to the pooled feature (CNNs).

Models never pick a device: the trainer moves them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import timm
import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from torch import nn

from sarbridge.core.checkpoint import load_model_state
from sarbridge.core.errors import CheckpointError, ConfigError
from sarbridge.nn.pretrained import is_hub_spec, resolve_hub_weights


class DualModule(nn.Module):
    """Two copies of a layer (optical, SAR), chosen per sample by a modality mask set before the call.

    Samples are routed, not blended: each copy sees only its own modality, so normalisation
    layers keep separate statistics per modality (CMPC's modality-specific shallow layers).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.optical = module
        self.sar = copy.deepcopy(module)
        self.sar_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.sar_mask
        if mask is None or not bool(mask.any()):
            return self.optical(x)
        if bool(mask.all()):
            return self.sar(x)
        out_opt = self.optical(x[~mask])
        out_sar = self.sar(x[mask])
        out = out_opt.new_empty((x.shape[0],) + tuple(out_opt.shape[1:]))
        out[~mask] = out_opt
        out[mask] = out_sar.to(out.dtype)
        return out


#: The former name (a dual first convolution); checkpoints use the same ``optical``/``sar`` keys.
DualConv = DualModule


def _get_module(root: nn.Module, dotted: str) -> nn.Module:
    mod = root
    for part in dotted.split("."):
        mod = getattr(mod, part)
    return mod


def _set_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(_get_module(root, parent) if parent else root, name, new)


class ModalityAwareBackbone(nn.Module):
    """A timm backbone that knows which images are optical and which are SAR.

    Args:
        name: timm model name, e.g. ``vit_base_patch16_224`` or ``resnet50``.
        image_size: input ``[height, width]``.
        dual_patch_embed: separate first layer for SAR.
        modality_embed: learned modality embedding (ViT only).
        modality_embed_scale: its multiplier (3.0 in TransOSS).
        size_token: use the ship-size token.
        drop_path: stochastic depth rate (where the model supports it).
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``depth``).
        modality_specific: CNNs only: names of the timm modules that get a separate SAR copy
            (CMPC's modality-specific shallow layers, e.g. ``["conv1", "bn1", "layer1"]``);
            the rest is shared. Replaces the dual first convolution of ``dual_patch_embed``.
    """

    def __init__(
        self,
        name: str,
        image_size: Sequence[int] = (256, 128),
        dual_patch_embed: bool = True,
        modality_embed: bool = True,
        modality_embed_scale: float = 3.0,
        size_token: bool = True,
        drop_path: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
        modality_specific: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        kwargs = dict(backbone_kwargs or {})
        try:
            if "vit" in name or "deit" in name:
                kwargs.setdefault("img_size", tuple(image_size))
            if drop_path > 0:
                kwargs.setdefault("drop_path_rate", drop_path)
            # Any: the attributes used below (patch_embed, blocks, num_features, pretrained_cfg ...)
            # depend on the timm architecture, which the nn.Module return type cannot express
            self.net: Any = cast(Any, timm.create_model(name, pretrained=False, num_classes=0, **kwargs))
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"cannot build timm backbone '{name}' ({str(exc)[:100]})",
                "use a timm model name such as vit_base_patch16_224 or resnet18, and valid backbone_kwargs",
            ) from None
        self.name = name
        self.is_vit = hasattr(self.net, "patch_embed") and hasattr(self.net, "_pos_embed") and hasattr(self.net, "blocks")
        self.dim = int(self.net.num_features)
        self.sar_patch_embed: nn.Module | None = None
        self.dual_names: list[str] = []
        if modality_specific:
            if self.is_vit:
                raise ConfigError("model.modality_specific needs a CNN backbone", "use dual_patch_embed for ViTs")
            names = dict(self.net.named_modules())
            unknown = [n for n in modality_specific if n not in names or not n]
            if unknown:
                top = ", ".join(n for n, _ in self.net.named_children())
                raise ConfigError(f"backbone '{name}' has no module(s) {', '.join(unknown)}", f"choose among: {top}")
            for n in modality_specific:
                _set_module(self.net, n, DualModule(_get_module(self.net, n)))
                self.dual_names.append(n)
        elif dual_patch_embed:
            if self.is_vit:
                self.sar_patch_embed = copy.deepcopy(self.net.patch_embed)
            else:
                first = self.net.pretrained_cfg.get("first_conv") if hasattr(self.net, "pretrained_cfg") else None
                if not first:
                    raise ConfigError(f"backbone '{name}' does not name its first convolution", "set model.dual_patch_embed=false")
                first = first[0] if isinstance(first, (list, tuple)) else first
                _set_module(self.net, first, DualModule(_get_module(self.net, first)))
                self.dual_names.append(first)
        if modality_embed and not self.is_vit:
            raise ConfigError(
                f"model.modality_embed needs a ViT backbone, '{name}' is not one",
                "set model.modality_embed=false for CNN backbones",
            )
        self.modality_embed = nn.Parameter(torch.zeros(2, self.dim)) if modality_embed else None
        if self.modality_embed is not None:
            nn.init.trunc_normal_(self.modality_embed, std=0.02)
        self.modality_embed_scale = modality_embed_scale
        self.size_proj = nn.Linear(3, self.dim) if size_token else None

    @property
    def duals(self) -> list[DualModule]:
        """The modules with a separate SAR copy (CNNs)."""
        return [cast(DualModule, _get_module(self.net, n)) for n in self.dual_names]

    @property
    def stem(self) -> DualModule | None:
        """The first modality-specific module of a CNN, if any."""
        return cast(DualModule, _get_module(self.net, self.dual_names[0])) if self.dual_names else None

    def _patches(self, x: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        out = self.net.patch_embed(x)
        if self.sar_patch_embed is not None and bool(sar.any()):
            view = (-1,) + (1,) * (out.dim() - 1)
            out = torch.where(sar.view(view), self.sar_patch_embed(x), out)
        return out

    def forward(self, x: torch.Tensor, modality: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
        """Global feature (B, D) of images ``x`` (B, 3, H, W) with modality indices (B,) (0/1)."""
        sar = modality.to(torch.bool)
        if self.size_proj is not None and size is None:
            raise ValueError("this model uses the ship-size token: pass size features (B, 3)")
        if not self.is_vit:
            duals = self.duals
            for d in duals:
                d.sar_mask = sar
            try:
                feat = self.net(x)
            finally:
                for d in duals:
                    d.sar_mask = None
            if self.size_proj is not None:
                assert size is not None  # checked above
                feat = feat + self.size_proj(size.to(feat.dtype))
            return feat
        net = self.net
        tokens = net._pos_embed(self._patches(x, sar))
        if self.modality_embed is not None:
            emb = self.modality_embed[modality.long()].unsqueeze(1)
            tokens = tokens + self.modality_embed_scale * emb.to(tokens.dtype)
        if self.size_proj is not None:
            assert size is not None  # checked above
            st = self.size_proj(size.to(tokens.dtype)).unsqueeze(1)
            tokens = torch.cat([tokens[:, :1], st, tokens[:, 1:]], dim=1)
        tokens = net.norm_pre(net.patch_drop(tokens))
        tokens = net.norm(net.blocks(tokens))
        return tokens[:, 0]


def _source_grid(num_patches: int, new_grid: list[int]) -> list[int]:
    """Grid of a saved position embedding: square if possible, else the new grid's aspect ratio."""
    side = round(num_patches**0.5)
    if side * side == num_patches:
        return [side, side]
    h = round((num_patches * new_grid[0] / new_grid[1]) ** 0.5)
    if h > 0 and num_patches % h == 0:
        return [h, num_patches // h]
    raise CheckpointError(
        f"cannot infer the patch grid of a position embedding with {num_patches} patches",
        "save the weights at a square input size or at the aspect ratio of data.image_size",
    )


def _read_weights_file(p: Path) -> Any:
    """The raw object stored in a weights file (``.safetensors`` or a ``torch.save`` file)."""
    if not p.is_file():
        raise CheckpointError(f"pretrained weights '{p}' not found", "pass a local .pth or .safetensors file")
    try:
        if p.suffix == ".safetensors":

            return load_file(str(p))
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights '{p}' ({type(exc).__name__})", "the file is damaged or not a state dict") from None


def _unwrap_state_dict(sd: Any, p: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"weights '{p}' hold no state dict", "save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` state dict from a local file.

    Nested dicts under ``state_dict``/``model``/``model_state`` are unwrapped.

    Raises:
        CheckpointError: missing or unreadable file.
    """
    p = Path(path)
    return _unwrap_state_dict(_read_weights_file(p), p)


def _is_sarbridge_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == "sarbridge"


def _load_sarbridge_backbone(backbone: ModalityAwareBackbone, state: dict[str, Any], p: Path) -> dict[str, int]:
    """Load the whole backbone (timm network, SAR patch embedding / stem, modality embedding,
    size token) from a sarbridge checkpoint: ``backbone`` of a pretraining checkpoint, or the
    ``backbone.*`` weights of another task's model. Strict: any missing, unexpected or
    differently shaped tensor is a :class:`CheckpointError` (the position embedding alone is
    resampled when only the input size differs)."""

    sd = state.get("backbone")
    if not isinstance(sd, dict):
        model = state.get("model")
        if not isinstance(model, dict):
            model = {}
        sd = {k.removeprefix("backbone."): v for k, v in model.items() if k.startswith("backbone.")}
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"sarbridge checkpoint '{p}' (task '{state.get('task')}') holds no backbone weights",
                              "pass the best.pt of 'sarbridge pretrain' (or of 'sarbridge train')")
    own = backbone.state_dict()
    key = "net.pos_embed"
    if backbone.is_vit and key in sd and key in own and sd[key].ndim == 3 and own[key].ndim == 3 \
            and sd[key].shape != own[key].shape and sd[key].shape[2] == own[key].shape[2]:

        net = backbone.net
        prefix = 0 if getattr(net, "no_embed_class", False) else net.num_prefix_tokens
        new_grid = list(net.patch_embed.grid_size)
        sd = dict(sd)
        sd[key] = resample_abs_pos_embed(sd[key], new_size=new_grid, num_prefix_tokens=prefix,
                                         old_size=_source_grid(sd[key].shape[1] - prefix, new_grid))
    load_model_state(backbone, sd, str(p))
    return {"loaded": len(sd), "missing": 0, "skipped": 0}


def load_pretrained(backbone: ModalityAwareBackbone, path: str | Path) -> dict[str, int]:
    """Load timm-compatible weights (or a sarbridge pretraining checkpoint) into the backbone.

    ``path`` may also name published weights (``timm``, ``timm:<name>.<tag>``,
    ``hf-hub:timm/<name>``): they are resolved to a file of the Hugging Face hub cache by
    :func:`sarbridge.nn.pretrained.resolve_hub_weights` and loaded like a local timm file.

    The position embedding is resampled to the grid in use, classifier heads are dropped, and the
    optical patch embedding / stem initialises the SAR one as well.

    A sarbridge checkpoint (``best.pt`` of ``sarbridge pretrain``, format ``sarbridge``) instead
    initialises the *whole* backbone, strictly: the SAR patch embedding / stem, the modality
    embedding and the size token come from the file too.

    Returns:
        Counts of ``loaded``, ``missing`` and ``skipped`` tensors.

    Raises:
        CheckpointError: no tensor of the file fits the backbone (another architecture), a
            sarbridge checkpoint of another architecture, or hub weights neither cached nor
            downloadable.
        ConfigError: a hub name timm does not know, or of another architecture.
    """
    if is_hub_spec(path):
        path = resolve_hub_weights(str(path), backbone.name)
    p = Path(path)
    raw = _read_weights_file(p)
    if _is_sarbridge_checkpoint(raw):
        return _load_sarbridge_backbone(backbone, raw, p)
    sd = _unwrap_state_dict(raw, p)
    net = backbone.net
    own = net.state_dict()
    if backbone.is_vit and "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:

        prefix = 0 if getattr(net, "no_embed_class", False) else net.num_prefix_tokens
        new_grid = list(net.patch_embed.grid_size)
        sd["pos_embed"] = resample_abs_pos_embed(
            sd["pos_embed"], new_size=new_grid, old_size=_source_grid(sd["pos_embed"].shape[1] - prefix, new_grid),
            num_prefix_tokens=prefix,
        )
    for first in backbone.dual_names:  # wrapped modules: map plain names onto the optical branch
        for k in list(sd):
            if k.startswith(first + ".") and not k.startswith(first + ".optical.") and not k.startswith(first + ".sar."):
                sd[k.replace(first + ".", first + ".optical.", 1)] = sd.pop(k)
    fitting = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise CheckpointError(
            f"weights '{path}' do not fit backbone '{backbone.name}' (no matching tensor)",
            "pass weights saved from the same timm architecture",
        )
    net.load_state_dict(fitting, strict=False)
    if backbone.sar_patch_embed is not None:
        backbone.sar_patch_embed.load_state_dict(net.patch_embed.state_dict())
    for dual in backbone.duals:
        dual.sar.load_state_dict(dual.optical.state_dict())
    return {"loaded": len(fitting), "missing": len(own) - len(fitting), "skipped": len(sd) - len(fitting)}
