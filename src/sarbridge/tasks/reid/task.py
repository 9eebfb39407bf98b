"""Ship re-identification: the training task, and train/evaluate pipelines that write results."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from sarbridge.core.checkpoint import load_checkpoint, load_model_state
from sarbridge.core.config import (
    config_from_dict,
    config_to_dict,
    merge_dicts,
    parse_overrides,
    rerank_arguments,
    save_config,
)
from sarbridge.core.distributed import current_context
from sarbridge.core.errors import ConfigError
from sarbridge.core.run import TrainingRun, check_output_folder
from sarbridge.core.trainer import StepCallback
from sarbridge.core.utils import resolve_device
from sarbridge.data.fingerprint import data_fingerprint, fingerprint_difference
from sarbridge.data.hoss import load_hoss
from sarbridge.data.manifest import load_manifest_splits
from sarbridge.data.records import OPTICAL, SAR, Sample
from sarbridge.data.splits import ReIDSplits, build_protocols, check_nonempty, holdout_validation
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.losses.alignment import CMALoss
from sarbridge.losses.metric import CrossEntropyLabelSmooth, TripletLoss
from sarbridge.nn.pretrained import warn_if_random_init
from sarbridge.tasks.reid.config import DataConfig, ExperimentConfig, FusionConfig
from sarbridge.tasks.reid.dataset import make_label_map, verify_images
from sarbridge.tasks.reid.evaluate import (
    evaluate_protocols,
    evaluate_protocols_with_rankings,
    extract_features,
)
from sarbridge.tasks.reid.fusion import check_fusion_ready, fuse_bank
from sarbridge.tasks.reid.loader import batch_to_device, build_batch_augment, build_train_dataset, build_train_loader
from sarbridge.tasks.reid.model import ReIDModel, build_reid_model
from sarbridge.tasks.reid.rankings import write_reid_rankings
from sarbridge.tasks.reid.results import write_reid_results
from sarbridge.tasks.reid.sampler import PKSampler


def load_splits(data_cfg: DataConfig, require_train: bool = True) -> ReIDSplits:
    """Read the dataset named by a ``DataConfig`` (HOSS layout or manifest CSV).

    Raises:
        ConfigError: the config names no dataset.
        DataError: the dataset is missing or malformed.
    """
    if data_cfg.format == "manifest":
        if not data_cfg.manifest:
            raise ConfigError("data.format is 'manifest' but data.manifest is empty", "set data.manifest=path/to.csv")
        return load_manifest_splits(data_cfg.manifest, require_train=require_train)
    if not data_cfg.root:
        raise ConfigError("data.root is empty", "set data.root to the HOSS folder (or pass --data DIR)")
    return load_hoss(data_cfg.root, require_train=require_train)


def arch_signature(cfg: ExperimentConfig) -> dict[str, Any]:
    """What must match for weights to load: backbone, its options and the input size."""
    m = cfg.model
    return {
        "backbone": m.backbone, "backbone_kwargs": dict(m.backbone_kwargs), "image_size": list(cfg.data.image_size),
        "dual_patch_embed": m.dual_patch_embed, "modality_embed": m.modality_embed, "size_token": m.size_token,
    }


class ReIDTask:
    """CE (BNNeck logits) + batch-hard triplet (pre-neck features) [+ CMAL] on PK batches.

    Validation (model selection) is Optical->SAR and SAR->Optical retrieval among held-out
    training identities; ``selection`` is the mean of the two mAPs.

    Under ``torchrun`` the PK sampler gives each rank its own share of the epoch's batches and
    validation features are extracted in shards and gathered (same metrics on every rank).
    Training forwards go through :attr:`train_module` (set by the trainer: the DDP / compiled
    wrapper of :attr:`model`).
    """

    name = "reid"
    train_module: nn.Module | None = None

    def __init__(self, cfg: ExperimentConfig, train: Sequence[Sample], val: Sequence[Sample], progress: bool = True,
                 device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.val = list(val)
        self.progress = progress
        self.spec = cfg.data.spec()
        self.label_map = make_label_map(train)
        self.model: ReIDModel = build_reid_model(cfg.model, cfg.data.image_size, len(self.label_map))
        warn_if_random_init(self.model.backbone, cfg.model.backbone, cfg.model.pretrained)
        ctx = current_context()
        if device is None:  # the device training will run on decides where augmentation runs
            device = ctx.device if ctx.distributed else resolve_device(cfg.device)
        # augmentation runs batched on the device when data.gpu_augment says so (auto: on CUDA)
        self.augment = build_batch_augment(cfg.data, self.spec, device)
        ds = build_train_dataset(train, self.spec, cfg.data, self.label_map, self.augment is not None,
                                 progress=progress)
        sp = cfg.data.sampler
        self.sampler = PKSampler([s.pid for s in train], [s.modality_index for s in train], sp.num_ids,
                                 sp.num_instances, sp.balance_modalities, seed=cfg.seed, rank=ctx.rank,
                                 world_size=ctx.world_size)
        self.loader = build_train_loader(ds, self.sampler, cfg.data, device)
        lc = cfg.loss
        self.ce: nn.Module = CrossEntropyLabelSmooth(lc.label_smoothing) if lc.label_smoothing > 0 else nn.CrossEntropyLoss()
        self.triplet = TripletLoss(margin=lc.triplet_margin)
        self.cmal = CMALoss(form=lc.cmal_form) if lc.cmal_weight > 0 else None

    def train_batches(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        return self.loader

    def training_step(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        b = batch_to_device(batch, device, self.augment)
        labels = b["label"]
        net = self.train_module if self.train_module is not None else self.model
        out = net(b["image"], b["modality"], b["size"])
        ce = self.ce(out["logits"].float(), labels)
        tri = self.triplet(out["features"].float(), labels)
        loss = self.cfg.loss.ce_weight * ce + self.cfg.loss.triplet_weight * tri
        logs = {"ce": ce.detach(), "triplet": tri.detach()}
        if self.cmal is not None:
            cmal = self.cmal(out["features"].float(), labels, b["modality"])
            loss = loss + self.cfg.loss.cmal_weight * cmal
            logs["cmal"] = cmal.detach()
        return {"loss": loss, **logs}

    def validate(self, epoch: int, device: torch.device) -> dict[str, float] | None:
        if not self.val:
            return None
        feats = extract_features(self.model, self.val, self.spec, device, self.cfg.eval.batch_size,
                                 progress=False, cache_dir=self.cfg.data.cache_dir)
        bank = {s.path: f for s, f in zip(self.val, feats)}
        opt = [s for s in self.val if s.modality == OPTICAL]
        sar = [s for s in self.val if s.modality == SAR]
        res = evaluate_protocols(bank, {"opt2sar": (opt, sar), "sar2opt": (sar, opt)}, self.cfg.eval.max_rank,
                                 rerank_arguments(self.cfg.eval))
        out: dict[str, float] = {}
        for name, r in res.items():
            if r.get("queries", 0):
                out[f"{name}_mAP"], out[f"{name}_R1"] = r["mAP"], r["R1"]
        maps = [v for k, v in out.items() if k.endswith("_mAP")]
        if maps:
            out["selection"] = sum(maps) / len(maps)
        return out

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            "preprocess": self.spec.to_dict(),
            "num_classes": len(self.label_map),
            "arch": arch_signature(self.cfg),
        }


def model_from_checkpoint(path: str | Path) -> tuple[ReIDModel, PreprocessSpec, ExperimentConfig, dict[str, Any]]:
    """Rebuild model, preprocessing and config from a checkpoint (weights strictly checked)."""
    state = load_checkpoint(path, task="reid")
    cfg = config_from_dict(state["config"], ExperimentConfig)
    cfg.model.pretrained = None  # weights come from the checkpoint, not the original file
    model = build_reid_model(cfg.model, cfg.data.image_size, int(state.get("num_classes", 0)))
    load_model_state(model, state["model"], str(path))
    model.eval()
    return model, PreprocessSpec.from_dict(state["preprocess"]), cfg, state


def evaluate_splits(
    model: ReIDModel,
    spec: PreprocessSpec,
    splits: ReIDSplits,
    device: torch.device,
    batch_size: int = 64,
    max_rank: int = 50,
    progress: bool = True,
    fusion: FusionConfig | None = None,
    cache_dir: str | Path | None = None,
    rerank: dict[str, Any] | None = None,
    rankings_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Extract features once per image (fused with generated twins when ``fusion.enabled``) and
    evaluate the three protocols (``rerank``: :func:`evaluate_protocols` re-ranking options).

    With ``rankings_dir`` the per-query top-10 lists, first-match ranks, APs and CMC curves are
    also written to ``rankings_dir/rankings.json`` (:mod:`sarbridge.retrieval.rankings`), which
    ``sarbridge report`` turns into ranked-list pictures without the model."""
    protocols, source = build_protocols(splits)
    unique: dict[str, Sample] = {}
    for q, g in protocols.values():
        for s in [*q, *g]:
            unique.setdefault(s.path, s)
    samples = list(unique.values())
    feats = extract_features(model, samples, spec, device, batch_size, progress=progress, desc="test features")
    bank = {s.path: f for s, f in zip(samples, feats)}
    if fusion is not None and fusion.enabled:
        bank = fuse_bank(model, spec, bank, samples, fusion, device, cache_dir or "fusion_cache", progress)
    if rankings_dir is None:
        per_protocol = evaluate_protocols(bank, protocols, max_rank, rerank)
    else:
        per_protocol, ranks = evaluate_protocols_with_rankings(bank, protocols, max_rank, rerank)
        write_reid_rankings(rankings_dir, ranks, {k: v.get("cmc", []) for k, v in per_protocol.items()})
    results: dict[str, Any] = per_protocol  # the same dict, with run-level entries added below
    results["protocol_source"] = source
    if fusion is not None and fusion.enabled:
        results["fusion"] = {"tau": fusion.tau, "samples": fusion.samples, "steps": fusion.steps,
                             "modalities": list(fusion.modalities)}
    return results


def splits_fingerprint(splits: ReIDSplits) -> dict[str, Any]:
    """The :func:`~sarbridge.data.fingerprint.data_fingerprint` of a re-ID dataset (train, query, gallery)."""
    return data_fingerprint({name: [(s.path, s.pid) for s in part] for name, part in
                             (("train", splits.train), ("query", splits.query), ("gallery", splits.gallery))},
                            root=splits.root or None)


def train_reid(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[StepCallback] = (),
    evaluate_test: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train, select on validation, evaluate the selected model on the test protocols.

    Writes ``config.yaml``, ``last.pt``, ``best.pt``, ``train_log.jsonl``, ``metrics.json`` and
    ``results.md`` into ``out_dir``.

    Under ``torchrun --nproc_per_node N`` every process runs this function: training uses
    DistributedDataParallel, the test features are extracted in shards, and only rank 0 writes
    files and shows progress (every rank returns the same metrics).

    Returns:
        The metrics written to ``metrics.json``.
    """
    if evaluate_test:
        check_fusion_ready(cfg.fusion)
    run = TrainingRun.open(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress)
    out, progress, device = run.out, run.progress, run.device
    splits = load_splits(cfg.data)
    check_nonempty(splits.train, "split 'bounding_box_train'", splits.root)
    train, val = holdout_validation(splits.train, cfg.data.val_fraction, seed=cfg.seed)
    verify_images([*splits.train, *splits.query, *splits.gallery], progress=progress)
    run.record_data(splits_fingerprint(splits))
    task = run.build_task(lambda: ReIDTask(cfg, train, val, progress=progress, device=device))
    result = run.trainer(task, callbacks=callbacks).fit()
    if not evaluate_test:
        return {}
    model, spec, _, _ = model_from_checkpoint(result.best_checkpoint)
    metrics = evaluate_splits(model.to(device), spec, splits, device, cfg.eval.batch_size, cfg.eval.max_rank,
                              progress, fusion=cfg.fusion, cache_dir=out / "fusion_cache",
                              rerank=rerank_arguments(cfg.eval), rankings_dir=run.results_dir)
    metrics["meta"] = {
        "checkpoint": str(result.best_checkpoint), "selected_epoch": result.best_epoch,
        "selection": "validation mAP (held-out training identities)" if val else "last epoch (no validation split)",
        "train_images": len(train), "val_images": len(val), "data": splits.root, "device": str(device),
    }
    if run.ctx.distributed:
        metrics["meta"]["processes"] = run.ctx.world_size
    run.write(lambda folder: write_reid_results(folder, metrics, title=f"sarbridge re-identification: {cfg.name}"))
    return metrics


def evaluate_reid(
    checkpoint: str | Path,
    out_dir: str | Path,
    data: str | None = None,
    device: str = "auto",
    progress: bool = True,
    overrides: list[str] | None = None,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on the test protocols of ``data`` (default: the data it was trained on).

    ``overwrite=False`` refuses a non-empty ``out_dir`` (after the checkpoint is read, so a bad
    checkpoint is named first). A warning line is printed when the data differs from the
    checkpoint's recorded ``data_fingerprint`` (the scores are then not the training run's).

    Writes ``config.yaml``, ``metrics.json``, ``results.md`` and ``rankings.json`` (per-query
    top-10 lists for ``sarbridge report``) into ``out_dir``.

    ``overrides`` (``key=value``) change evaluation-time settings of the checkpoint's config, e.g.
    ``fusion.enabled=true`` with ``fusion.opt2sar_checkpoint=...`` for MOS feature fusion.
    """
    model, spec, cfg, state = model_from_checkpoint(checkpoint)
    check_output_folder(out_dir, overwrite, what="results folder")
    if overrides:
        cfg = config_from_dict(merge_dicts(config_to_dict(cfg), parse_overrides(overrides)), ExperimentConfig)
    if data:
        if data.endswith(".csv"):
            cfg.data.format, cfg.data.manifest = "manifest", data
        else:
            cfg.data.format, cfg.data.root = "hoss", data
    cfg.device = device
    dev = resolve_device(device)
    splits = load_splits(cfg.data, require_train=False)
    out = Path(out_dir)
    metrics = evaluate_splits(model.to(dev), spec, splits, dev, cfg.eval.batch_size, cfg.eval.max_rank, progress,
                              fusion=cfg.fusion, cache_dir=out / "fusion_cache", rerank=rerank_arguments(cfg.eval),
                              rankings_dir=out)
    metrics["meta"] = {"checkpoint": str(checkpoint), "selected_epoch": state.get("epoch"), "data": splits.root,
                       "device": str(dev)}
    changed = fingerprint_difference(state.get("data_fingerprint"), splits_fingerprint(splits))
    if changed is not None:
        metrics["meta"]["data_changed"] = changed
        print(f"warning: the data in {splits.root} differs from what model {checkpoint} was trained on ({changed}); "
              "results are not comparable with the training run's", file=sys.stderr)
    save_config(cfg, out / "config.yaml")
    write_reid_results(out, metrics, title="sarbridge re-identification: evaluation")
    return metrics
