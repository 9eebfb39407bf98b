"""Published pretrained weights by name: timm's Hugging Face hub weights, resolved to a local file.

``model.pretrained`` takes a local ``.pth``/``.safetensors`` file or one of these names:

* ``timm``: the default weights timm ships for ``model.backbone`` (its default tag),
* ``timm:<name>.<tag>``: the weights of one timm tag, e.g. ``timm:vit_base_patch16_224.orig_in21k_ft_in1k``
  (the original ``jx_vit_base_p16_224`` ImageNet weights TransOSS and MOS start from) or
  ``timm:resnet50.tv_in1k`` (torchvision's ImageNet ResNet-50, CMPC's start),
* ``hf-hub:timm/<name>.<tag>``: a Hugging Face hub repository holding timm-format weights.

The file is looked up in the Hugging Face hub cache that timm itself uses (``HF_HUB_CACHE``, or
``HF_HOME/hub``, default ``~/.cache/huggingface/hub``) and downloaded there only when it is missing
and ``HF_HUB_OFFLINE`` is not set. Without network and cache the error says which file to
download and where to put it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from timm.models import get_pretrained_cfg
from torch import nn

from sarbridge.core.errors import CheckpointError, ConfigError

#: the weight files timm looks for in a hub repository, in its order of preference
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
#: backbones with more parameters than this get a warning when they start from random weights
LARGE_BACKBONE_PARAMS = 20_000_000


def is_hub_spec(spec: str | Path | None) -> bool:
    """Whether ``model.pretrained`` names hub weights (``timm``, ``timm:...``, ``hf-hub:...``) rather than a file."""
    if not isinstance(spec, str):
        return False
    return spec == "timm" or spec.startswith(("timm:", "hf-hub:"))


def _architecture(name: str) -> str:
    return name.split(".", 1)[0]


def hub_repo_id(spec: str, backbone: str) -> str:
    """The Hugging Face repository (``timm/<name>.<tag>``) a hub spec names for ``backbone``.

    Raises:
        ConfigError: an unknown timm name, weights that timm does not host on the hub, or weights
            of another architecture than ``backbone``.
    """
    if spec.startswith("hf-hub:"):
        repo = spec.removeprefix("hf-hub:").strip("/")
        org, _, name = repo.partition("/")
        if not org or not name:
            raise ConfigError(f"model.pretrained '{spec}' is not 'hf-hub:<org>/<repo>'", "e.g. hf-hub:timm/resnet50.tv_in1k")
        if org == "timm" and _architecture(name) != _architecture(backbone):
            raise ConfigError(f"model.pretrained '{spec}' holds '{_architecture(name)}' weights, not '{backbone}'",
                              "name weights of model.backbone's architecture")
        return repo
    name = backbone if spec == "timm" else spec.removeprefix("timm:")
    if _architecture(name) != _architecture(backbone):
        raise ConfigError(f"model.pretrained '{spec}' holds '{_architecture(name)}' weights, not '{backbone}'",
                          "name weights of model.backbone's architecture, or just 'timm' for its default weights")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # a tag timm does not know for a known architecture
        cfg = None
    if cfg is None:
        raise ConfigError(f"timm has no pretrained weights named '{name}'",
                          "list them with timm.list_pretrained('" + _architecture(name) + "*')")
    if not cfg.hf_hub_id:
        raise ConfigError(f"timm's weights '{name}' are not on the Hugging Face hub",
                          f"download {cfg.url or 'them'} and set model.pretrained to the local file")
    return str(cfg.hf_hub_id)


def hub_cache_dir() -> Path:
    """The hub cache timm and huggingface_hub use, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(hf_constants.HF_HUB_CACHE)


def _offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(hf_constants.HF_HUB_OFFLINE)


def resolve_hub_weights(spec: str, backbone: str) -> Path:
    """The local weights file of a hub spec, from the hub cache (downloaded into it when allowed).

    Args:
        spec: ``timm``, ``timm:<name>.<tag>`` or ``hf-hub:<org>/<repo>``.
        backbone: the timm name of the backbone the weights are for.

    Returns:
        Path of the cached ``model.safetensors`` (or ``pytorch_model.bin``).

    Raises:
        ConfigError: see :func:`hub_repo_id`.
        CheckpointError: the file is neither cached nor downloadable (offline, no network); the
            message names the URL to download and the cache folder to put it in.
    """
    repo = hub_repo_id(spec, backbone)
    cache = hub_cache_dir()
    for filename in HUB_FILENAMES:
        hit = try_to_load_from_cache(repo, filename, cache_dir=cache)
        if isinstance(hit, str):
            return Path(hit)
    folder = cache / f"models--{repo.replace('/', '--')}"
    hint = (f"download https://huggingface.co/{repo}/resolve/main/model.safetensors and set model.pretrained to "
            f"that file, or put it in {folder}/snapshots/<revision>/ with the revision in {folder}/refs/main")
    if _offline():
        raise CheckpointError(f"pretrained weights '{spec}' ({repo}) are not in the hub cache {cache} "
                              "and HF_HUB_OFFLINE is set", hint)
    last: Exception | None = None
    for filename in HUB_FILENAMES:
        try:
            return Path(hf_hub_download(repo, filename, cache_dir=cache))
        except Exception as exc:  # not found, no network, gated ...: try the next file, then report
            last = exc
    raise CheckpointError(f"cannot download pretrained weights '{spec}' ({repo}) into {cache} "
                          f"({type(last).__name__})", hint)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def warn_if_random_init(module: nn.Module, backbone: str, pretrained: str | Path | None) -> bool:
    """Warn when a large backbone is about to be trained from random initialisation.

    Args:
        module: the backbone (its parameter count decides "large").
        backbone: its timm name, for the message.
        pretrained: the ``model.pretrained`` value (None/empty: random initialisation).

    Returns:
        Whether a warning was emitted.
    """
    if pretrained:
        return False
    n = count_parameters(module)
    if n <= LARGE_BACKBONE_PARAMS:
        return False
    warnings.warn(
        f"training backbone '{backbone}' ({n / 1e6:.0f}M parameters) from random initialisation "
        "(model.pretrained is null); the published results start from ImageNet weights: set "
        "model.pretrained=timm (the backbone's default timm weights), timm:<name>.<tag> or a local file",
        UserWarning, stacklevel=3,
    )
    return True


__all__ = [
    "HUB_FILENAMES", "LARGE_BACKBONE_PARAMS", "count_parameters", "hub_cache_dir", "hub_repo_id", "is_hub_spec",
    "resolve_hub_weights", "warn_if_random_init",
]
