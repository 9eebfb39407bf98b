"""Typed configuration of a CMPC localisation experiment (``sarbridge geo train``).

Same YAML + ``key=value`` override machinery as every task (:func:`sarbridge.core.config.load_config`);
defaults are the CMPC paper settings (ResNet-50, 200x200 patches, 512-d embedding, triplet +
Wasserstein with 5 critic steps, lambda 0.01, critic lr 1e-3, SGD lr 0.0025, batch 24, 30 epochs,
top-10 nodes with 5 edges). ``configs/geo_demo.yaml`` is the CPU size. The preprocessing keys of
``data`` are those of :class:`~sarbridge.data.transforms.PreprocessSpec` (with localisation defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sarbridge.core.config import (
    OptimConfig,
    RerankOptions,
    RunConfig,
    load_config,
    validate_device,
    validate_eval_rerank,
    validate_optim,
)
from sarbridge.core.errors import ConfigError
from sarbridge.data.transforms import PreprocessSpec

__all__ = [
    "GeoConfig",
    "GeoDataConfig",
    "GeoEvalConfig",
    "GeoLossConfig",
    "GeoModelConfig",
    "MatcherConfig",
    "RefineConfig",
    "RegisterConfig",
    "WassersteinConfig",
    "load_geo_config",
    "validate_geo",
]

GEO_FORMATS = ("scene", "map", "sn6", "manifest", "bigearthnet")


@dataclass
class GeoDataConfig(PreprocessSpec):
    """Where the map and the SAR queries come from, and how patches become tensors (the
    :class:`~sarbridge.data.transforms.PreprocessSpec` keys; :meth:`spec` gives the spec alone).

    ``format``:
      * ``scene``: a folder holding ``optical.tif`` and ``sar.tif`` (``sarbridge geo synth``);
      * ``map``: ``map`` (optical GeoTIFF) and ``sar`` (one or more co-registered SAR GeoTIFFs);
      * ``sn6``: an SN6-CMPC folder in its released layout (``root`` =
        ``SN6-CMPC/samearea`` etc., :mod:`~sarbridge.tasks.geo.sn6`; also detected under ``scene``),
        or a sarbridge JSON listing file (``root``); ``manifest``: sarbridge's geo CSV (``root``);
      * ``bigearthnet``: a folder of S1/S2 ``.npz`` pairs (``root``).
    """

    image_size: list[int] = field(default_factory=lambda: [200, 200])
    sar_preprocess: str = "percentile"
    sar_alpha: float = 2.0
    format: Literal["scene", "map", "sn6", "manifest", "bigearthnet"] = "scene"
    root: str = ""
    map: str | None = None
    sar: list[str] = field(default_factory=list)
    patch_size: int = 200
    stride: int | None = None
    setting: Literal["aligned", "arbitrary"] = "arbitrary"
    queries: int | None = None
    split: Literal["same-area", "cross-area"] = "same-area"
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.1, 0.3])
    batch_size: int = 24
    num_workers: int = 0
    cache: bool = True
    # Folder of on-disk, memory-mapped patch caches (uint8 network images, built once, shared by
    # processes and DataLoader workers; the in-memory ``cache`` is then off); null = no disk cache.
    cache_dir: str | None = None


@dataclass
class GeoModelConfig:
    """Modality-specific shallow layers + shared deep layers (timm) + projection."""

    backbone: str = "resnet50"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    embed_dim: int = 512
    modality_specific: list[str] = field(default_factory=lambda: ["conv1", "bn1", "layer1"])
    projection_bn: bool = True
    dropout: float = 0.0
    drop_path: float = 0.0


@dataclass
class WassersteinConfig:
    """Adversarial modality alignment: a critic estimates W(optical, SAR); the encoder minimises it.

    The critic is an MLP ``embed_dim -> hidden (x hidden_layers) -> 1`` (CMPC: 512-512-1).
    ``mode: gp`` is WDGRL's gradient penalty (weight ``gamma``), ``clip`` CMPC's weight clipping.
    """

    enabled: bool = True
    mode: Literal["gp", "clip"] = "gp"
    weight: float = 0.01
    gamma: float = 10.0
    clip: float = 0.1
    critic_steps: int = 5
    critic_lr: float = 1e-3
    hidden: int = 512
    hidden_layers: int = 1


@dataclass
class GeoLossConfig:
    """Cross-modal batch-hard triplet (margin, or soft when ``triplet_margin`` is null) + Wasserstein."""

    triplet_weight: float = 1.0
    triplet_margin: float | None = 0.3
    wasserstein: WassersteinConfig = field(default_factory=WassersteinConfig)


@dataclass
class RefineConfig:
    """Location-aware graph refinement of the coarse top-k.

    ``mode``: ``post-hoc`` trains the graph network on the trained coarse model's retrieval
    results; ``end-to-end`` also trains it jointly with the encoder on in-batch candidates
    (then fine-tunes it post hoc).

    ``train_noise``: expected norm of the Gaussian noise added to the (unit) training query embeddings before
    their coarse search, so that training graphs are as imperfect as held-out ones (``null``:
    calibrated so that the training top-1 falls to the validation top-1; ``0``: off);
    ``noise_draws`` noisy copies of every training query.
    """

    enabled: bool = True
    mode: Literal["post-hoc", "end-to-end"] = "post-hoc"
    top_k: int = 10
    edge_k: int = 5
    sigma: float | None = None
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    use_coords: bool = True
    use_attention: bool = True
    centroid_top: int = 3
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    e2e_weight: float = 1.0
    dropout: float = 0.1
    train_noise: float | None = None
    noise_draws: int = 4


@dataclass
class RegisterConfig:
    """The metre-level ``registered`` stage after retrieval (:mod:`sarbridge.tasks.geo.register`).

    The SAR query is registered in windows of the optical map around the ``top_k`` best cells of
    the retrieval stage validation chose (the cell's footprint plus ``margin`` map pixels, null =
    half a patch), with ``method`` ``cfog`` (training-free descriptor), ``ncc`` (intensity) or
    ``features`` (the trained encoder's dense feature maps), searching at ``1 / coarse`` resolution
    first (windows that overlap heavily are searched as one box). The position is taken from the
    window with the lowest matching cost, and ``rerank`` (default) re-orders the ``top_k`` cells by
    how much a cell-sized box at the registered position overlaps them, so the stage's top-1 is the
    cell the registration put the query in (registration as a re-ranker). Below the confidence ``threshold`` (null: calibrated
    on the validation queries for the lowest median error with top-1 not lower, else the stage's
    default 1.05) the retrieval position and order are kept. Needs data cut from one map (``scene`` /
    ``map`` formats; a raster file, a VRT or a folder of tiles). ``learned`` uses the dense matcher
    trained with the model (:class:`MatcherConfig`).
    """

    enabled: bool = True
    method: Literal["cfog", "ncc", "features", "learned"] = "cfog"
    top_k: int = 3
    margin: int | None = None
    coarse: int = 2
    threshold: float | None = None
    rerank: bool = True


@dataclass
class MatcherConfig:
    """The learned dense SAR/optical matcher of ``eval.register.method: learned``
    (:mod:`sarbridge.tasks.geo.register.dense_matcher`), trained by ``geo train`` after the
    retrieval stages on the training queries (a random crop of each in an optical window with
    ``margin`` map pixels around its true position; ``steps`` optimiser steps of ``batch_size``)."""

    enabled: bool = False
    steps: int = 200
    batch_size: int = 16
    lr: float = 0.002
    channels: int = 16
    dim: int = 16
    margin: int = 64


@dataclass
class GeoEvalConfig(RerankOptions):
    """Coarse search depth, plus the :class:`~sarbridge.core.config.RerankOptions` switches: re-ranking as
    the alternative to the graph refinement, and query expansion (``aqe``/``alpha``: each query
    embedding is replaced by its (weighted) mean with its ``qe_k`` nearest references before every
    stage); ``register``: the metre-level registration stage (:class:`RegisterConfig`)."""

    batch_size: int = 64
    top_k: int = 20
    every: int = 1
    register: RegisterConfig = field(default_factory=RegisterConfig)


@dataclass
class GeoConfig(RunConfig):
    """A whole localisation experiment."""

    name: str = "geo"
    data: GeoDataConfig = field(default_factory=GeoDataConfig)
    model: GeoModelConfig = field(default_factory=GeoModelConfig)
    loss: GeoLossConfig = field(default_factory=GeoLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=0.0025, weight_decay=5e-4, warmup_epochs=1, epochs=30, min_lr_factor=0.01))
    eval: GeoEvalConfig = field(default_factory=GeoEvalConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)

    def validate(self) -> None:
        """Range checks (:func:`validate_geo`)."""
        validate_geo(self)


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise ConfigError(f"{key} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate_geo(cfg: GeoConfig) -> None:
    """Range checks that types alone cannot express.

    Raises:
        ConfigError: naming the key and the fix.
    """
    d, m, loss, r, e = cfg.data, cfg.model, cfg.loss, cfg.refine, cfg.eval
    d.validate("data")
    if d.patch_size < 8:
        raise ConfigError(f"data.patch_size must be >= 8 pixels, got {d.patch_size}")
    if d.stride is not None and d.stride < 1:
        raise ConfigError(f"data.stride must be >= 1 (or null = patch_size), got {d.stride}")
    if len(d.fractions) != 3 or any(f < 0 for f in d.fractions) or not math.isclose(sum(d.fractions), 1.0, abs_tol=1e-6):
        raise ConfigError(f"data.fractions must be three train/val/test fractions summing to 1, got {d.fractions}")
    if d.fractions[0] <= 0 or d.fractions[2] <= 0:
        raise ConfigError("data.fractions needs a train and a test share > 0", "e.g. [0.6, 0.1, 0.3]")
    if d.queries is not None and d.queries < 1:
        raise ConfigError(f"data.queries must be >= 1 (or null), got {d.queries}")
    if d.batch_size < 2:
        raise ConfigError(f"data.batch_size must be >= 2 (the other pairs are the negatives), got {d.batch_size}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
    if d.cache_dir is not None and not str(d.cache_dir).strip():
        raise ConfigError("data.cache_dir must be a folder path or null, got an empty string",
                          "e.g. --set data.cache_dir=geo_cache")
    if d.format == "map" and (not d.map or not d.sar):
        raise ConfigError("data.format=map needs data.map (optical GeoTIFF) and data.sar (SAR GeoTIFFs)",
                          "e.g. --set data.map=map.tif 'data.sar=[sar.tif]'")
    if m.embed_dim < 1:
        raise ConfigError(f"model.embed_dim must be >= 1, got {m.embed_dim}")
    if not 0.0 <= m.dropout < 1.0 or not 0.0 <= m.drop_path < 1.0:
        raise ConfigError("model.dropout and model.drop_path must be in [0, 1)")
    _positive(loss.triplet_weight, "loss.triplet_weight", allow_zero=True)
    if loss.triplet_margin is not None:
        _positive(loss.triplet_margin, "loss.triplet_margin")
    w = loss.wasserstein
    _positive(w.weight, "loss.wasserstein.weight", allow_zero=True)
    _positive(w.gamma, "loss.wasserstein.gamma", allow_zero=True)
    _positive(w.clip, "loss.wasserstein.clip")
    _positive(w.critic_lr, "loss.wasserstein.critic_lr")
    if w.critic_steps < 1 or w.hidden < 1 or w.hidden_layers < 0:
        raise ConfigError("loss.wasserstein.critic_steps and hidden must be >= 1, hidden_layers >= 0")
    if r.top_k < 2:
        raise ConfigError(f"refine.top_k must be >= 2 (a graph needs nodes), got {r.top_k}")
    if r.edge_k < 1 or r.layers < 1 or r.heads < 1 or r.hidden < 1 or r.centroid_top < 1 or r.epochs < 1:
        raise ConfigError("refine.edge_k, layers, heads, hidden, centroid_top and epochs must be >= 1")
    if r.hidden % r.heads:
        raise ConfigError(f"refine.hidden ({r.hidden}) must be divisible by refine.heads ({r.heads})")
    if r.sigma is not None:
        _positive(r.sigma, "refine.sigma")
    _positive(r.lr, "refine.lr")
    _positive(r.e2e_weight, "refine.e2e_weight", allow_zero=True)
    if r.train_noise is not None:
        _positive(r.train_noise, "refine.train_noise", allow_zero=True)
    if r.noise_draws < 1:
        raise ConfigError(f"refine.noise_draws must be >= 1, got {r.noise_draws}")
    if r.batch_size < 1:
        raise ConfigError(f"refine.batch_size must be >= 1, got {r.batch_size}")
    if e.batch_size < 1 or e.top_k < 1 or e.every < 1:
        raise ConfigError("eval.batch_size, top_k and every must be >= 1")
    validate_eval_rerank(e)
    g = e.register
    if g.top_k < 1 or g.coarse < 1 or (g.margin is not None and g.margin < 0):
        raise ConfigError("eval.register.top_k and coarse must be >= 1, eval.register.margin >= 0 (or null)",
                          "e.g. --set eval.register.top_k=3")
    if g.threshold is not None:
        _positive(g.threshold, "eval.register.threshold")
    mt = cfg.matcher
    if g.method == "learned" and not mt.enabled:
        raise ConfigError("eval.register.method=learned needs the dense matcher: matcher.enabled is false",
                          "--set matcher.enabled=true, or use eval.register.method=cfog")
    if mt.steps < 1 or mt.batch_size < 1 or mt.channels < 1 or mt.dim < 1 or mt.margin < 4:
        raise ConfigError("matcher.steps, batch_size, channels and dim must be >= 1 and matcher.margin >= 4, got "
                          f"{mt.steps}, {mt.batch_size}, {mt.channels}, {mt.dim}, {mt.margin}", "e.g. the defaults")
    _positive(mt.lr, "matcher.lr")
    if e.top_k < r.top_k:
        raise ConfigError(f"eval.top_k ({e.top_k}) must be >= refine.top_k ({r.top_k})", "raise eval.top_k")
    validate_optim(cfg.optim)
    validate_device(cfg.device)


def load_geo_config(path: str | Path | None, overrides: list[str] | None = None) -> GeoConfig:
    """Load and validate a localisation YAML (``configs/geo_demo.yaml``) with ``key=value`` overrides.

    Raises:
        ConfigError: the file is missing or malformed, a key is unknown or a value invalid.
    """
    return load_config(path, overrides, cls=GeoConfig)
