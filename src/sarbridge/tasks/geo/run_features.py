"""SAR query and optical target-patch features of a localisation run before and after training.

The samples of a split are its SAR queries and the optical reference patches they target (the
same places in both modalities). See :mod:`sarbridge.tasks.run_features`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.config import config_from_dict
from sarbridge.core.errors import DataError
from sarbridge.core.utils import seed_everything
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.tasks.geo.bundle import TASK, build_encoder, load_geo_model
from sarbridge.tasks.geo.config import GeoConfig
from sarbridge.tasks.geo.datasets import PatchImages, embed_patches
from sarbridge.tasks.geo.model import GeoEmbeddingNet
from sarbridge.tasks.geo.results import RUN_CHECKPOINT
from sarbridge.tasks.geo.run import split_queries
from sarbridge.tasks.run_features import (
    RunFeatures,
    StageFeatures,
    preserved_rng,
    pretrained_for_init,
    subsample_indices,
)


def initial_geo_encoder(cfg: GeoConfig, run: Path = Path(".")) -> tuple[GeoEmbeddingNet, str]:
    """The localisation encoder as training initialised it: ``seed_everything(cfg.seed)`` then
    :func:`~sarbridge.tasks.geo.bundle.build_encoder` (the first thing
    :class:`~sarbridge.tasks.geo.train.GeoCoarseTask` builds after :func:`~sarbridge.tasks.geo.run.train_geo`
    seeds), with the pretrained weights the config names when the file still exists.

    Returns:
        ``(encoder in eval mode, description of the initialisation)``.
    """
    c = copy.deepcopy(cfg)
    c.model.pretrained, note = pretrained_for_init(c.model.pretrained, c.seed, run)
    with preserved_rng():
        seed_everything(c.seed)
        enc = build_encoder(c)
    return enc.eval(), note


def _geo_data(cfg: GeoConfig, data: str | None, run: Path) -> None:
    d = cfg.data
    if data:
        if d.format == "map" and (Path(data) / "optical.tif").is_file():
            d.format = "scene"
        d.root = str(data)
    if d.format == "map":
        missing = [str(p) for p in [d.map, *d.sar] if not p or not Path(str(p)).exists()]
    else:
        missing = [str(d.root)] if not d.root or not Path(str(d.root)).exists() else []
    if missing:
        raise DataError(f"data '{missing[0]}' recorded in run '{run}' no longer exists",
                        "pass --data PATH (the scene folder or dataset the run was trained on)")


def geo_features(run: Path, split: str, max_samples: int, device: torch.device, data: str | None = None,
                 progress: bool = True, seed: int = 0) -> RunFeatures:
    """SAR query and optical target-patch features of a localisation run before and after training.

    Args:
        run: the run folder (with ``geo_model.pt``).
        split: ``test``, ``val`` or ``train``.
        max_samples: at most this many patches (seeded subsample stratified by modality).
        device: where the encoders run.
        data: data location overriding the one recorded in the run.
        progress: progress bars.
        seed: seed of the subsample.

    Raises:
        DataError: the data is no longer where the run recorded it.
    """
    ckpt = run / RUN_CHECKPOINT
    bundle = load_geo_model(ckpt)
    cfg_init = config_from_dict(load_checkpoint(ckpt, task=TASK)["config"], GeoConfig)
    cfg = copy.deepcopy(cfg_init)
    _geo_data(cfg, data, run)
    view, queries = split_queries(cfg, split)
    targets = sorted({q.target for q in queries})
    refs = [view.references[i] for i in targets]
    modality = np.concatenate([np.zeros(len(refs), int), np.ones(len(queries), int)])
    ids = np.array([r.index for r in refs] + [q.target for q in queries])
    keep = subsample_indices(modality, max_samples, seed)
    keep_refs = [refs[i] for i in keep if i < len(refs)]
    keep_q = [queries[i - len(refs)] for i in keep if i >= len(refs)]
    modality, ids = modality[keep], ids[keep]
    initial, note = initial_geo_encoder(cfg_init, run)
    bs = cfg.eval.batch_size
    stages = {}
    for stage, enc in (("before", initial), ("after", bundle.encoder)):
        enc = enc.to(device)
        f_opt = embed_patches(enc, PatchImages(keep_refs, OPTICAL, bundle.spec, cache=False), device, bs, progress,
                              f"{stage}: optical features")
        f_sar = embed_patches(enc, PatchImages(keep_q, SAR, bundle.spec, cache=False), device, bs, progress,
                              f"{stage}: SAR features")
        stages[stage] = StageFeatures(torch.cat([f_opt, f_sar]), modality, ids)
        enc.cpu()
    where = cfg.data.map if cfg.data.format == "map" else cfg.data.root
    return RunFeatures("geo", stages, note, str(where), str(ckpt), {"selected_epoch": bundle.info.get("epoch")})


__all__ = ["geo_features", "initial_geo_encoder"]
