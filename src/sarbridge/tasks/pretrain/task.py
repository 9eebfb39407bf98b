"""Contrastive optical/SAR pretraining (TransOSS): the task and the run pipeline (the config is in
:mod:`sarbridge.tasks.pretrain.config`).

The model is the re-identification backbone itself (a
:class:`~sarbridge.nn.backbones.ModalityAwareBackbone` built from the same ``model`` config
keys by the same code), trained with the CLIP-style symmetric InfoNCE loss
(:class:`~sarbridge.losses.contrastive.ContrastiveLoss`) on optical/SAR pairs: the optical image
goes through the optical patch embedding, the SAR image through the SAR one, and the two global
features of a pair are pulled together while the other pairs of the batch are pushed away.

Validation (model selection) is pair retrieval on held-out pairs (whole groups are held out):
Optical->SAR and SAR->Optical R1, mAP as a tie-break. A run writes ``config.yaml``, ``last.pt``,
``best.pt`` (task ``pretrain``; the backbone's full state dict under ``backbone``),
``train_log.jsonl``, ``metrics.json`` and ``results.md``. Point ``model.pretrained`` of a
``sarbridge train`` config at ``best.pt`` to fine-tune from it: every backbone tensor is loaded,
the SAR patch embedding / stem and the modality embedding included.

Under ``torchrun`` the run is data-parallel: every process builds the same model, trains through
DistributedDataParallel on a disjoint share of each epoch's pairs (``DistributedSampler``,
``data.batch_size`` pairs per process and step) and only rank 0 writes files. The contrastive
negatives of a pair are the other pairs of its process's batch (``loss.gather_negatives: false``,
the default) or of the batches of every process (``true``: the features are all-gathered with
their gradients, so a W-process step equals one process with a W times larger batch). The
learned temperature lives in the loss inside the DDP forward, so its gradient is averaged too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from sarbridge.core.checkpoint import load_checkpoint, load_model_state
from sarbridge.core.config import config_from_dict, config_to_dict
from sarbridge.core.distributed import current_context
from sarbridge.core.errors import ConfigError, DataError
from sarbridge.core.progress import progress_bar
from sarbridge.core.run import TrainingRun
from sarbridge.core.threads import loader_workers
from sarbridge.core.trainer import StepCallback
from sarbridge.data.pairs import SCENE_LAYOUTS, PairDataset, PairItem, read_pairs, split_pairs
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.losses.contrastive import ContrastiveLoss
from sarbridge.nn.backbones import ModalityAwareBackbone
from sarbridge.tasks.pretrain.config import PretrainConfig, reid_view, validate_pretrain
from sarbridge.tasks.reid.evaluate import ReIDEvaluator
from sarbridge.tasks.reid.model import build_reid_model
from sarbridge.tasks.reid.results import write_reid_results
from sarbridge.tasks.reid.task import arch_signature

__all__ = [
    "ContrastivePretrainModel",
    "PretrainTask",
    "backbone_from_checkpoint",
    "build_pretrain_model",
    "pair_retrieval",
    "read_config_pairs",
    "train_pretrain",
]


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x`` (same shape everywhere) concatenated in rank order; the gradient flows
    back to each process's own rows (summed over the processes' losses)."""
    from torch.distributed.nn.functional import all_gather  # noqa: PLC0415 - lazy: only under a process group; not in every torch build

    return torch.cat(all_gather(x.contiguous()))


def _gather_plain(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x`` concatenated in rank order (no gradient)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class ContrastivePretrainModel(nn.Module):
    """The backbone plus the loss (which owns the learned temperature, so it is optimised too).

    :meth:`forward` is the whole training computation (features and loss), so that under
    DistributedDataParallel every trained parameter, the temperature included, is used inside the
    wrapped forward and has its gradient averaged over processes.

    Args:
        backbone: the re-identification backbone.
        criterion: the symmetric InfoNCE loss (owns ``logit_scale``).
        gather_negatives: under a process group, compute the loss over the batches of every
            process (features all-gathered with gradients); ignored in a single process.
    """

    def __init__(self, backbone: ModalityAwareBackbone, criterion: ContrastiveLoss,
                 gather_negatives: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.criterion = criterion
        self.gather_negatives = gather_negatives

    def features(self, optical: torch.Tensor, sar: torch.Tensor, optical_size: torch.Tensor | None = None,
                 sar_size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Global features of the optical and the SAR images (one backbone pass over both)."""
        n = optical.shape[0]
        modality = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(sar.shape[0], dtype=torch.long)]).to(optical.device)
        size = None if optical_size is None or sar_size is None else torch.cat([optical_size, sar_size])
        feats = self.backbone(torch.cat([optical, sar]), modality, size)
        return feats[:n], feats[n:]

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, optical_size: torch.Tensor | None = None,
                sar_size: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The contrastive loss of a batch of pairs (``loss``) and the current ``scale`` (detached).

        ``groups`` (N,) marks pairs that are not negatives of each other (None: every other pair is).
        With ``gather_negatives`` under a process group, every process's features (and groups) are
        gathered and each process computes the loss of the whole global batch; DDP's averaging of
        the per-process gradients then gives exactly the gradient of that global loss. The batches
        must then have the same size on every process.
        """
        f_opt, f_sar = self.features(optical, sar, optical_size, sar_size)
        f_opt, f_sar = f_opt.float(), f_sar.float()
        if self.gather_negatives and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            f_opt, f_sar = _gather_with_grad(f_opt), _gather_with_grad(f_sar)
            if groups is not None:
                groups = _gather_plain(groups)
        return {"loss": self.criterion(f_opt, f_sar, groups), "scale": self.criterion.scale.detach()}


def build_pretrain_model(cfg: PretrainConfig) -> ContrastivePretrainModel:
    """The backbone exactly as ``sarbridge train`` builds it for the same ``model`` keys."""
    backbone = build_reid_model(cfg.model, cfg.data.image_size, num_classes=0).backbone
    lc = cfg.loss
    return ContrastivePretrainModel(backbone, ContrastiveLoss(lc.temperature, lc.learn_temperature, lc.max_scale),
                                    gather_negatives=lc.gather_negatives)


def _size_mode(cfg: PretrainConfig) -> str:
    mode = cfg.data.size_features
    if mode == "auto":
        return "zero" if cfg.data.layout in SCENE_LAYOUTS else "chip"
    return mode


@torch.no_grad()
def pair_features(backbone: nn.Module, dataset: PairDataset, device: torch.device,
                  batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optical features, SAR features (N, D each, CPU float32) and group indices of a dataset."""
    was = backbone.training
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    fo, fs, groups = [], [], []
    for b in loader:
        n = b["optical"].shape[0]
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        fo.append(backbone(b["optical"].to(device), zeros, b["optical_size"].to(device)).float().cpu())
        fs.append(backbone(b["sar"].to(device), zeros + 1, b["sar_size"].to(device)).float().cpu())
        groups.append(b["group"])
    backbone.train(was)
    return torch.cat(fo), torch.cat(fs), torch.cat(groups)


def pair_retrieval(opt: torch.Tensor, sar: torch.Tensor, groups: torch.Tensor, max_rank: int = 50) -> dict[str, dict[str, Any]]:
    """Optical->SAR and SAR->Optical retrieval among pairs: the match of a query is every image of
    the other modality in its group (L2-normalised features, squared Euclidean distance)."""
    out = {}
    g = groups.numpy()
    for name, (q, r, qm) in {"opt2sar": (opt, sar, 0), "sar2opt": (sar, opt, 1)}.items():
        ev = ReIDEvaluator(len(q), max_rank=max(max_rank, 10))
        ev.process(q, g, [qm] * len(q))
        ev.process(r, g, [1 - qm] * len(r))
        out[name] = ev.evaluate()
    return out


class PretrainTask:
    """Symmetric InfoNCE on random batches of pairs; validation = held-out pair retrieval.

    ``selection`` is the mean of the Optical->SAR and SAR->Optical R1, plus their mean mAP / 1000
    to break ties (R1 moves in coarse steps on a small validation set).

    Training forwards go through :attr:`train_module` (set by the trainer: the DDP / compiled
    wrapper of :attr:`model`). Under a process group each process draws a disjoint share of every
    epoch's pairs (``DistributedSampler`` seeded with ``seed``, reshuffled per epoch); validation
    is computed in full by every process (no collective), rank 0's result is what counts.
    """

    name = "pretrain"
    train_module: nn.Module | None = None

    def __init__(self, cfg: PretrainConfig, train: Sequence[PairItem], val: Sequence[PairItem]) -> None:
        if len(train) < 2:
            raise DataError(f"pretraining needs at least 2 training pairs, got {len(train)}",
                            "add pairs or lower data.val_fraction")
        self.cfg = cfg
        self.train_items, self.val_items = list(train), list(val)
        self.spec = cfg.data.spec()
        self.size_mode = _size_mode(cfg)
        self.model = build_pretrain_model(cfg)
        aug = cfg.data.augment
        self.train_ds = PairDataset(self.train_items, self.spec, self.spec.train_transform(aug.flip, aug.pad, aug.random_erasing),
                                    self.size_mode, cache=cfg.data.cache)
        self.val_ds = PairDataset(self.val_items, self.spec, size_features=self.size_mode, cache=cfg.data.cache) if val else None
        workers = loader_workers(cfg.data.num_workers)
        ctx = current_context()
        self.dist_sampler: DistributedSampler[Any] | None = None
        if ctx.distributed:  # a disjoint share of the pairs per process; the same order everywhere per epoch
            self.dist_sampler = DistributedSampler(self.train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                                   shuffle=True, seed=cfg.seed, drop_last=True)
            bs = min(cfg.data.batch_size, len(self.dist_sampler))
            if bs < 2:
                raise DataError(f"{len(self.train_items)} training pairs over {ctx.world_size} processes leave "
                                f"{len(self.dist_sampler)} per process (a batch needs at least 2)",
                                "use more pairs or start fewer processes")
        else:
            bs = min(cfg.data.batch_size, len(self.train_items))
        # drop_last: a final batch of one pair would have no negative (loss 0); under DDP it also
        # keeps the batches equal in size on every process (needed by loss.gather_negatives)
        self.loader = DataLoader(self.train_ds, batch_size=bs, shuffle=self.dist_sampler is None,
                                 sampler=self.dist_sampler, drop_last=True, num_workers=workers,
                                 persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def preload(self, progress: bool = True) -> None:
        """Read every pair once (fills the cache; a corrupt file stops the run before training)."""
        for ds in (self.train_ds, self.val_ds):
            if ds is None:
                continue
            for i in progress_bar(range(len(ds)), desc="reading pairs", disable=not progress, leave=False, dynamic_ncols=True):
                ds._load(i)

    def train_batches(self, epoch: int) -> DataLoader:
        if self.dist_sampler is not None:
            self.dist_sampler.set_epoch(epoch)
        return self.loader

    def training_step(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        net = self.train_module if self.train_module is not None else self.model
        groups = batch["group"].to(device) if self.cfg.loss.mask_same_group else None
        return net(batch["optical"].to(device, non_blocking=True), batch["sar"].to(device, non_blocking=True),
                   batch["optical_size"].to(device), batch["sar_size"].to(device), groups)

    def validate(self, epoch: int, device: torch.device) -> dict[str, float] | None:
        if self.val_ds is None:
            return None
        fo, fs, groups = pair_features(self.model.backbone, self.val_ds, device, self.cfg.eval.batch_size)
        res = pair_retrieval(fo, fs, groups, self.cfg.eval.max_rank)
        out = {f"{k}_{m}": float(res[k][m]) for k in res for m in ("R1", "mAP")}
        r1 = (out["opt2sar_R1"] + out["sar2opt_R1"]) / 2
        mean_map = (out["opt2sar_mAP"] + out["sar2opt_mAP"]) / 2
        out["selection"] = r1 + mean_map / 1000.0
        return out

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            "preprocess": self.spec.to_dict(),
            "arch": arch_signature(reid_view(self.cfg)),
            "size_features": self.size_mode,
            "backbone": self.model.backbone.state_dict(),
            "pairs": {"layout": self.cfg.data.layout, "data": self.cfg.data.root,
                      "train": len(self.train_items), "val": len(self.val_items)},
        }


def read_config_pairs(cfg: PretrainConfig) -> list[PairItem]:
    """The pairs a config names (``data.layout`` + ``data.root``)."""
    d = cfg.data
    if not d.root:
        raise ConfigError("data.root is empty", "pass --data PATH (a folder, or the CSV for --layout manifest)")
    kwargs: dict[str, Any] = {}
    if d.layout in ("synthetic", "os"):
        kwargs["split"] = "all" if d.include_test else "train"
    elif d.layout == "manifest":
        kwargs["splits"] = ("train", "query", "gallery") if d.include_test else ("train",)
    elif d.layout == "bigearthnet":
        kwargs.update(sar_mode=d.sar_mode, db_range=tuple(d.sar_db_range), rgb_percentiles=tuple(d.rgb_percentiles))
    return read_pairs(d.root, d.layout, **kwargs)


def backbone_from_checkpoint(path: str | Path) -> tuple[ModalityAwareBackbone, PreprocessSpec, PretrainConfig, dict[str, Any]]:
    """Rebuild the pretrained backbone, its preprocessing and config from a pretraining checkpoint."""
    state = load_checkpoint(path, task="pretrain")
    cfg = config_from_dict(state["config"], PretrainConfig)
    cfg.model.pretrained = None
    model = build_pretrain_model(cfg)
    load_model_state(model, state["model"], str(path))
    model.eval()
    return model.backbone, PreprocessSpec.from_dict(state["preprocess"]), cfg, state


def train_pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: Sequence[StepCallback] = (),
    pairs: Sequence[PairItem] | None = None,
) -> dict[str, Any]:
    """Pretrain the backbone contrastively and evaluate pair retrieval on the held-out pairs.

    Runs data-parallel under ``torchrun`` (see the module docstring); only rank 0 writes files and
    shows progress (the training log's losses are rank 0's own).

    Args:
        cfg: the run's config.
        out_dir: run folder.
        resume: continue from ``out_dir/last.pt``.
        overwrite: start over in a folder that already holds a run.
        progress: progress bars and per-epoch lines.
        callbacks: per-step trainer callbacks.
        pairs: use these pairs instead of reading ``data.root`` with ``data.layout``.

    Returns:
        The metrics written to ``metrics.json`` (``opt2sar``/``sar2opt`` on held-out pairs, ``meta``).
    """
    validate_pretrain(cfg)
    run = TrainingRun.open(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress)
    progress, device = run.progress, run.device
    items = list(pairs) if pairs is not None else read_config_pairs(cfg)
    train, val = split_pairs(items, cfg.data.val_fraction, seed=cfg.seed)
    task = run.build_task(lambda: PretrainTask(cfg, train, val))
    task.preload(progress)
    result = run.trainer(task, callbacks=callbacks).fit()
    metrics: dict[str, Any] = {}
    if val:
        backbone, _, _, _ = backbone_from_checkpoint(result.best_checkpoint)
        assert task.val_ds is not None
        fo, fs, groups = pair_features(backbone.to(device), task.val_ds, device, cfg.eval.batch_size)
        metrics.update(pair_retrieval(fo, fs, groups, cfg.eval.max_rank))
    first, last = result.history[0] if result.history else {}, result.history[-1] if result.history else {}
    metrics["meta"] = {
        "evaluated_on": f"{len(val)} held-out pairs ({len({v.group for v in val})} groups)" if val
        else "nothing: too few pairs/groups for a held-out set (the last epoch is the model)",
        "checkpoint": str(result.best_checkpoint), "selected_epoch": result.best_epoch,
        "selection": "validation pair retrieval R1 (mean of both directions)" if val else "last epoch",
        "layout": cfg.data.layout, "data": cfg.data.root, "train_pairs": len(train), "val_pairs": len(val),
        "size_features": task.size_mode, "device": str(device),
        "first_epoch_loss": first.get("loss"), "last_epoch_loss": last.get("loss"),
        "final_scale": last.get("scale"),
    }
    if run.ctx.distributed:
        metrics["meta"]["processes"] = run.ctx.world_size
        metrics["meta"]["negatives"] = "global batch (all processes)" if cfg.loss.gather_negatives else "per-process batch"
    run.write(lambda folder: write_reid_results(folder, metrics,
                                           title=f"sarbridge pretraining: {cfg.name} (held-out pair retrieval)"))
    return metrics
