"""Modality-gap analysis of a run folder: features before and after training, measured gaps, pictures.

:func:`analyze_run` reads a re-identification run folder (``best.pt``) or a localisation run folder
(``geo_model.pt``), extracts optical and SAR features of one split with the run's INITIAL model
("before": rebuilt from the run's config exactly as training initialised it, i.e.
``seed_everything(cfg.seed)`` then the model builder, with the pretrained weights the config names)
and with the TRAINED model ("after"), and writes into the run folder:

- ``analysis.json``: ``{"run", "task", "split", "samples": {"optical", "sar"}, "method",
  "stages": {"before": {metric: value}, "after": {...}}, "images": ["modality_gap.png"], ...}``;
- ``analysis.md``: the metrics table (stages side by side) with a one-line reading of each metric;
- ``modality_gap.png``: the 2-D projections of both stages side by side.

:func:`analyze_runs` analyses several run folders (an ablation folder expands to its runs) and,
with more than one, writes ``comparison.md`` / ``comparison.json`` side by side.

Samples (re-identification): ``test`` = the query and gallery images, ``val`` = the held-out
validation identities of the training split, ``train`` = the rest of the training split.
Localisation: the split's SAR queries and the optical reference patches they target (the same
places in both modalities).
"""

from __future__ import annotations

import copy
import os
import random
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.errors import CheckpointError, DataError, SarbridgeError
from sarbridge.retrieval.modality_gap import METRIC_NOTES, modality_gap_report
from sarbridge.core.utils import atomic_write_json, atomic_write_text, resolve_device, seed_everything

SPLITS: tuple[str, ...] = ("test", "val", "train")
STAGES: tuple[str, ...] = ("before", "after")
STAGE_TITLES = {"before": "before training (initial model)", "after": "after training (selected model)"}
IMAGE_NAME = "modality_gap.png"


@dataclass
class StageFeatures:
    """Features of one stage: ``features`` ``(N, D)`` with per-row ``modality`` (0 optical, 1 SAR)
    and ``ids`` (identity / location, -1 for none)."""

    features: torch.Tensor
    modality: np.ndarray
    ids: np.ndarray

    @property
    def optical(self) -> torch.Tensor:
        return self.features[torch.as_tensor(self.modality == 0)]

    @property
    def sar(self) -> torch.Tensor:
        return self.features[torch.as_tensor(self.modality == 1)]


@dataclass
class RunFeatures:
    """Everything extracted from one run folder."""

    task: str
    stages: dict[str, StageFeatures]
    init: str
    data: str
    checkpoint: str
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- run folders


def detect_run(run_dir: str | Path) -> str:
    """``"reid"`` (a folder with ``best.pt``) or ``"geo"`` (a folder with ``geo_model.pt``).

    Raises:
        SarbridgeError: the folder is missing or holds neither checkpoint.
    """
    p = Path(run_dir)
    if not p.is_dir():
        raise SarbridgeError(f"run folder '{p}' not found", "pass the --out folder of 'sarbridge train' or 'geo train'")
    if (p / "geo_model.pt").is_file():
        return "geo"
    if (p / "best.pt").is_file():
        return "reid"
    raise CheckpointError(f"run folder '{p}' holds no checkpoint (best.pt or geo_model.pt)",
                          "pass a finished training run folder (or an ablation folder)")


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a re-identification or localisation checkpoint."""
    return (path / "best.pt").is_file() or (path / "geo_model.pt").is_file()


def expand_runs(paths: Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """Run folders of the arguments: a run folder stays, an ablation folder (with ``ablation.json``,
    or any folder without a checkpoint whose sub-folders up to two levels down hold runs, e.g.
    ``seed0/baseline``) expands to its runs in sorted order.

    Returns:
        ``(run_dirs, ablation_dir)``, the latter the first expanded folder (or None).
    """
    runs: list[Path] = []
    ablation: Path | None = None
    for raw in paths:
        p = Path(raw)
        if not p.is_dir() or is_run_dir(p):
            runs.append(p)
            continue
        found = sorted(c for c in [*p.glob("*"), *p.glob("*/*")] if c.is_dir() and is_run_dir(c))
        if not found:
            runs.append(p)  # detect_run reports the problem
            continue
        ablation = ablation or p
        runs.extend(found)
    return runs, ablation


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """Seed as training did without leaving the global generators changed for the caller."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


def _pretrained_for_init(pretrained: str | None, seed: int, run: Path) -> tuple[str | None, str]:
    if not pretrained:
        return None, f"random initialisation (seed {seed})"
    if Path(pretrained).is_file():
        return pretrained, f"pretrained weights '{pretrained}' (seed {seed})"
    msg = (f"the pretrained weights '{pretrained}' named by run '{run}' are gone; 'before' uses a random "
           f"initialisation (seed {seed}), not the run's true start")
    warnings.warn(msg, stacklevel=3)
    return None, f"random initialisation (seed {seed}); pretrained file '{pretrained}' not found"


def subsample_indices(modality: np.ndarray, max_samples: int, seed: int = 0) -> np.ndarray:
    """Seeded subsample of at most ``max_samples`` rows, stratified by modality.

    Each modality keeps its share of ``max_samples`` (proportional allocation, at least 2 per
    modality where available); sorted indices. Everything is kept when there are at most
    ``max_samples`` rows.
    """
    modality = np.asarray(modality)
    n = len(modality)
    if max_samples <= 0 or n <= max_samples:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for m in np.unique(modality):
        idx = np.flatnonzero(modality == m)
        k = min(len(idx), max(2, int(round(max_samples * len(idx) / n))))
        keep.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(keep))


# ----------------------------------------------------------------------------------- re-identification


def initial_reid_model(cfg: Any, num_classes: int, run: Path = Path(".")) -> tuple[torch.nn.Module, str]:
    """The run's model as training initialised it: ``seed_everything(cfg.seed)`` then
    :func:`~sarbridge.tasks.reid.model.build_reid_model` (what :func:`~sarbridge.tasks.reid.task.train_reid`
    does before :class:`~sarbridge.tasks.reid.task.ReIDTask` builds its model), with the pretrained
    weights the config names when the file still exists.

    Returns:
        ``(model in eval mode, description of the initialisation)``.
    """
    from sarbridge.tasks.reid.model import build_reid_model

    mcfg = copy.deepcopy(cfg.model)
    mcfg.pretrained, note = _pretrained_for_init(mcfg.pretrained, cfg.seed, run)
    with _preserved_rng():
        seed_everything(cfg.seed)
        model = build_reid_model(mcfg, cfg.data.image_size, num_classes)
    return model.eval(), note


def _reid_data(cfg: Any, data: str | None, run: Path) -> None:
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


def reid_samples(cfg: Any, split: str) -> list[Any]:
    """The images of ``split`` (``test``: query + gallery; ``val``/``train``: the training split as
    :func:`~sarbridge.data.splits.holdout_validation` divided it for the run)."""
    from sarbridge.data.splits import holdout_validation
    from sarbridge.tasks.reid.task import load_splits

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
    """Optical and SAR features of a re-identification run before and after training."""
    from sarbridge.core.config import config_from_dict
    from sarbridge.tasks.reid.evaluate import extract_features
    from sarbridge.tasks.reid.task import model_from_checkpoint

    ckpt = run / "best.pt"
    trained, spec, cfg, state = model_from_checkpoint(ckpt)
    cfg_init = config_from_dict(state["config"])  # keeps model.pretrained, which model_from_checkpoint clears
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


# ----------------------------------------------------------------------------------- localisation


def initial_geo_encoder(cfg: Any, run: Path = Path(".")) -> tuple[torch.nn.Module, str]:
    """The localisation encoder as training initialised it: ``seed_everything(cfg.seed)`` then
    :func:`~sarbridge.tasks.geo.bundle.build_encoder` (the first thing
    :class:`~sarbridge.tasks.geo.train.GeoCoarseTask` builds after :func:`~sarbridge.tasks.geo.run.train_geo`
    seeds), with the pretrained weights the config names when the file still exists."""
    from sarbridge.tasks.geo.bundle import build_encoder

    c = copy.deepcopy(cfg)
    c.model.pretrained, note = _pretrained_for_init(c.model.pretrained, c.seed, run)
    with _preserved_rng():
        seed_everything(c.seed)
        enc = build_encoder(c)
    return enc.eval(), note


def _geo_data(cfg: Any, data: str | None, run: Path) -> None:
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
    """SAR query and optical target-patch features of a localisation run before and after training."""
    from sarbridge.core.config import config_from_dict
    from sarbridge.data.records import OPTICAL, SAR
    from sarbridge.core.checkpoint import load_checkpoint
    from sarbridge.tasks.geo.bundle import load_geo_model
    from sarbridge.tasks.geo.config import GeoConfig
    from sarbridge.tasks.geo.datasets import PatchImages, embed_patches
    from sarbridge.tasks.geo.run import split_queries

    ckpt = run / "geo_model.pt"
    bundle = load_geo_model(ckpt)
    cfg_init = config_from_dict(load_checkpoint(ckpt, task="geo")["config"], GeoConfig)
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


# ----------------------------------------------------------------------------------- analysis files


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    return str(v)


def analysis_markdown(result: dict[str, Any]) -> str:
    """``analysis.md``: stages side by side per metric, the change, and the metric's reading."""
    from sarbridge.viz.tables import markdown_table

    before, after = result["stages"]["before"], result["stages"]["after"]
    rows = [[k, _fmt(before[k]), _fmt(after[k]), f"{after[k] - before[k]:+.4g}", METRIC_NOTES.get(k, "")]
            for k in after]
    s = result["samples"]
    lines = [
        f"# Modality gap: {result['run']}", "",
        f"Task: {result['task']}; split: {result['split']}; samples: {s['optical']} optical, {s['sar']} SAR; "
        f"features L2-normalised. Before = {result.get('init', 'the initial model')}; after = the selected "
        f"checkpoint ({Path(result.get('checkpoint', '')).name}).", "",
        markdown_table(rows, ["metric", "before", "after", "change", "reading"]),
        f"![modality gap]({IMAGE_NAME})", "",
        f"{result['method'].upper()} projections of the optical (blue circles) and SAR (orange triangles) features; "
        "grey lines join the optical and SAR images of a few identities. Aligned modalities mix; a gap shows as "
        "two separate clouds.", "",
    ]
    return "\n".join(lines)


def analyze_run(
    run_dir: str | Path,
    split: str = "test",
    max_samples: int = 2000,
    method: str = "tsne",
    device: str = "auto",
    data: str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the optical/SAR modality gap of a run before and after training; write the files.

    Args:
        run_dir: a re-identification (``best.pt``) or localisation (``geo_model.pt``) run folder.
        split: ``test``, ``val`` or ``train``.
        max_samples: at most this many images in all (seeded subsample stratified by modality).
        method: 2-D projection, ``tsne`` or ``pca``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        data: data location overriding the one recorded in the run (folder or manifest CSV).
        progress: progress bars.
        seed: seed of the subsample, the gap measures and the projection.

    Returns:
        The content written to ``RUN_DIR/analysis.json``.

    Raises:
        SarbridgeError: missing folder or checkpoint, data no longer where the run recorded it,
            an unknown split or method, or too few images of a modality.
    """
    from sarbridge.viz.projection import METHODS, ProjectionPanel, modality_projection_figure, project_2d

    run = Path(run_dir)
    if split not in SPLITS:
        raise SarbridgeError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
    if method not in METHODS:
        raise SarbridgeError(f"unknown projection method '{method}'", f"use one of {', '.join(METHODS)}")
    task = detect_run(run)
    dev = resolve_device(device)
    extract = reid_features if task == "reid" else geo_features
    feats = extract(run, split, max_samples, dev, data=data, progress=progress, seed=seed)
    after = feats.stages["after"]
    n_opt, n_sar = int((after.modality == 0).sum()), int((after.modality == 1).sum())
    if min(n_opt, n_sar) < 2:
        raise DataError(f"split '{split}' of run '{run}' has {n_opt} optical and {n_sar} SAR images",
                        "the analysis needs at least 2 of each; choose another --split or raise --max-samples")
    stages = {name: modality_gap_report(st.optical, st.sar, seed=seed) for name, st in feats.stages.items()}
    panels = []
    for name in STAGES:
        st, g = feats.stages[name], stages[name]
        xy = project_2d(st.features, method=method, seed=seed)
        panels.append(ProjectionPanel(STAGE_TITLES[name], xy, st.modality, st.ids,
                                      f"probe acc {g['linear_probe_acc']:.2f}, kNN mixing {g['knn_mixing']:.2f}, "
                                      f"MMD² {g['mmd2_rbf']:.3g}"))
    modality_projection_figure(panels, run / IMAGE_NAME, title=f"{run.name or run}: optical vs SAR features "
                               f"({split}, {method})", seed=seed)
    result = {
        "run": str(run), "task": task, "split": split, "samples": {"optical": n_opt, "sar": n_sar},
        "method": method, "stages": stages, "images": [IMAGE_NAME],
        "init": feats.init, "checkpoint": feats.checkpoint, "data": feats.data, **feats.extra,
    }
    atomic_write_json(run / "analysis.json", result)
    atomic_write_text(run / "analysis.md", analysis_markdown(result))
    return result


# ----------------------------------------------------------------------------------- comparison


def run_names(runs: Sequence[Path]) -> list[str]:
    """Short distinct names: paths relative to the runs' common parent (folder name for one run)."""
    if len(runs) == 1:
        return [runs[0].name or str(runs[0])]
    resolved = [r.resolve() for r in runs]
    try:
        common = Path(os.path.commonpath([str(r) for r in resolved]))
    except ValueError:
        return [str(r) for r in runs]
    names = [str(r.relative_to(common)) if r != common else r.name for r in resolved]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def comparison_markdown(names: Sequence[str], results: Sequence[dict[str, Any]]) -> str:
    """``comparison.md``: every run's metrics after training, before training, and the change."""
    from sarbridge.viz.tables import markdown_table

    metrics = list(results[0]["stages"]["after"])
    out = ["# Modality gap: comparison of runs", ""]
    for title, cell in (
        ("After training", lambda r, k: _fmt(r["stages"]["after"][k])),
        ("Before training (initial model)", lambda r, k: _fmt(r["stages"]["before"][k])),
        ("Change (after - before)", lambda r, k: f"{r['stages']['after'][k] - r['stages']['before'][k]:+.4g}"),
    ):
        rows = [[n, *(cell(r, k) if k in r["stages"]["after"] else "n/a" for k in metrics)]
                for n, r in zip(names, results)]
        out += [f"## {title}", "", markdown_table(rows, ["run", *metrics])]
    out.append("Readings:\n")
    out += [f"- {k}: {METRIC_NOTES[k]}" for k in metrics if k in METRIC_NOTES]
    samples = "; ".join(f"{n}: {r['samples']['optical']} optical + {r['samples']['sar']} SAR ({r['split']})"
                        for n, r in zip(names, results))
    out += ["", f"Samples: {samples}.", ""]
    return "\n".join(out)


def write_comparison(names: Sequence[str], results: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``comparison.md`` and ``comparison.json`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    payload = {"runs": [{"name": n, **r} for n, r in zip(names, results)],
               "metrics": list(results[0]["stages"]["after"])}
    atomic_write_json(out / "comparison.json", payload)
    atomic_write_text(out / "comparison.md", comparison_markdown(names, results))
    return [out / "comparison.md", out / "comparison.json"]


def analyze_runs(
    run_dirs: Sequence[str | Path],
    split: str = "test",
    max_samples: int = 2000,
    method: str = "tsne",
    device: str = "auto",
    data: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
) -> tuple[list[str], list[dict[str, Any]], list[Path]]:
    """:func:`analyze_run` on every run (ablation folders expand to their runs), then, with more
    than one run, the comparison files in ``out`` (default: the ablation folder given, else the
    first run's parent).

    Returns:
        ``(names, results, comparison_paths)`` (no paths for a single run).
    """
    runs, ablation = expand_runs(run_dirs)
    if not runs:
        raise SarbridgeError("no run folder given", "pass one or more run folders")
    for r in runs:  # fail before the first long extraction
        detect_run(r)
    names = run_names(runs)
    results = []
    for name, r in zip(names, runs):
        if progress and len(runs) > 1:
            print(f"analysing {name} ({r})", flush=True)
        results.append(analyze_run(r, split, max_samples, method, device, data, progress, seed))
    paths: list[Path] = []
    if len(runs) > 1:
        target = Path(out) if out is not None else (ablation if ablation is not None else runs[0].resolve().parent)
        paths = write_comparison(names, results, target)
    return names, results, paths


__all__ = [
    "RunFeatures", "StageFeatures", "analysis_markdown", "analyze_run", "analyze_runs", "comparison_markdown",
    "detect_run", "expand_runs", "geo_features", "initial_geo_encoder", "initial_reid_model", "reid_features",
    "reid_samples", "run_names", "subsample_indices", "write_comparison",
]
