"""Optical and SAR features of a re-identification run before and after training (modality-gap analysis).

Samples: ``test`` = the query and gallery images, ``val`` = the held-out validation identities of
the training split, ``train`` = the rest of the training split. See :mod:`sarbridge.tasks.run_features`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.config import config_from_dict
from sarbridge.core.errors import DataError
from sarbridge.core.utils import seed_everything
from sarbridge.data.records import Sample
from sarbridge.data.splits import holdout_validation
from sarbridge.tasks.reid.config import ExperimentConfig
from sarbridge.tasks.reid.evaluate import extract_features
from sarbridge.tasks.reid.model import build_reid_model
from sarbridge.tasks.reid.results import RUN_CHECKPOINT
from sarbridge.tasks.reid.task import load_splits, model_from_checkpoint
from sarbridge.tasks.run_features import (
    RunFeatures,
    StageFeatures,
    preserved_rng,
    pretrained_for_init,
    subsample_indices,
)


def initial_reid_model(cfg: ExperimentConfig, num_classes: int, run: Path = Path(".")) -> tuple[torch.nn.Module, str]:
    """The run's model as training initialised it: ``seed_everything(cfg.seed)`` then
    :func:`~sarbridge.tasks.reid.model.build_reid_model` (what :func:`~sarbridge.tasks.reid.task.train_reid`
    does before :class:`~sarbridge.tasks.reid.task.ReIDTask` builds its model), with the pretrained
    weights the config names when the file still exists.

    Returns:
        ``(model in eval mode, description of the initialisation)``.
    """
    mcfg = copy.deepcopy(cfg.model)
    mcfg.pretrained, note = pretrained_for_init(mcfg.pretrained, cfg.seed, run)
    with preserved_rng():
        seed_everything(cfg.seed)
        model = build_reid_model(mcfg, cfg.data.image_size, num_classes)
    return model.eval(), note


def _reid_data(cfg: ExperimentConfig, data: str | None, run: Path) -> None:
    if data:
        if str(data).endswith(".csv"):
            cfg.data.format, cfg.data.manifest = "manifest", str(data)
        else:
            cfg.data.format, cfg.data.root = "hoss", str(data)
    where = cfg.data.manifest if cfg.data.format == "manifest" else cfg.data.root
    if not where or not Path(where).exists():
        what = "data manifest" if cfg.data.format == "manifest" else "data folder"
        raise DataError(f"{what} '{where}' recorded in run '{run}' no longer exists",
                        "pass --data PATH (the HOSS folder or manifest CSV the run was trained on)")


def reid_samples(cfg: ExperimentConfig, split: str) -> list[Sample]:
    """The images of ``split`` (``test``: query + gallery; ``val``/``train``: the training split as
    :func:`~sarbridge.data.splits.holdout_validation` divided it for the run)."""
    splits = load_splits(cfg.data, require_train=split != "test")
    if split == "test":
        unique: dict[str, Any] = {}
        for s in [*splits.query, *splits.gallery]:
            unique.setdefault(s.path, s)
        return list(unique.values())
    train, val = holdout_validation(splits.train, cfg.data.val_fraction, seed=cfg.seed)
    return val if split == "val" else train


def reid_features(run: Path, split: str, max_samples: int, device: torch.device, data: str | None = None,
                  progress: bool = True, seed: int = 0) -> RunFeatures:
    """Optical and SAR features of a re-identification run before and after training.

    Args:
        run: the run folder (with ``best.pt``).
        split: ``test``, ``val`` or ``train``.
        max_samples: at most this many images (seeded subsample stratified by modality).
        device: where the models run.
        data: data location overriding the one recorded in the run (folder or manifest CSV).
        progress: progress bars.
        seed: seed of the subsample.

    Raises:
        DataError: the data is no longer where the run recorded it, or the split is empty.
    """
    ckpt = run / RUN_CHECKPOINT
    trained, spec, cfg, state = model_from_checkpoint(ckpt)
    cfg_init = config_from_dict(state["config"], ExperimentConfig)  # keeps model.pretrained, which model_from_checkpoint clears
    _reid_data(cfg, data, run)
    samples = reid_samples(cfg, split)
    if not samples:
        raise DataError(f"split '{split}' of '{cfg.data.root or cfg.data.manifest}' is empty",
                        "choose another --split (test, val, train)")
    modality = np.array([s.modality_index for s in samples])
    keep = subsample_indices(modality, max_samples, seed)
    samples = [samples[i] for i in keep]
    modality, ids = modality[keep], np.array([s.pid for s in samples])
    initial, note = initial_reid_model(cfg_init, int(state.get("num_classes", 0)), run)
    bs = cfg.eval.batch_size
    stages = {}
    for stage, model in (("before", initial), ("after", trained)):
        feats = extract_features(model.to(device), samples, spec, device, bs, progress=progress,
                                 desc=f"{stage}: features")
        stages[stage] = StageFeatures(feats, modality, ids)
        model.cpu()
    return RunFeatures("reid", stages, note, str(cfg.data.manifest if cfg.data.format == "manifest" else cfg.data.root),
                       str(ckpt), {"selected_epoch": state.get("epoch")})


__all__ = ["initial_reid_model", "reid_features", "reid_samples"]
