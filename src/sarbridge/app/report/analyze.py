"""Modality-gap analysis of a run folder: features before and after training, measured gaps, pictures.

:func:`analyze_run` reads a finished run folder of a task with a gap analysis (re-identification:
``best.pt``; localisation: ``geo_model.pt``; see :func:`sarbridge.tasks.registry.task_of_run`), has the
task extract optical and SAR features of one split with the run's INITIAL model ("before": rebuilt
from the run's config exactly as training initialised it, i.e. ``seed_everything(cfg.seed)`` then the
model builder, with the pretrained weights the config names) and with the TRAINED model ("after")
(:mod:`sarbridge.tasks.run_features`), and writes into the run folder:

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

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sarbridge.core.errors import CheckpointError, DataError, SarbridgeError
from sarbridge.core.utils import atomic_write_json, atomic_write_text, resolve_device
from sarbridge.retrieval.modality_gap import METRIC_NOTES, modality_gap_report
from sarbridge.tasks.registry import TaskSpec, analysable_tasks, task_of_run
from sarbridge.tasks.run_features import SPLITS
from sarbridge.viz.projection import (
    METHODS,
    ProjectionPanel,
    modality_projection_figure,
    project_2d,
)
from sarbridge.viz.tables import markdown_table

STAGES: tuple[str, ...] = ("before", "after")
STAGE_TITLES = {"before": "before training (initial model)", "after": "after training (selected model)"}
IMAGE_NAME = "modality_gap.png"


# ----------------------------------------------------------------------------------- run folders


def _run_files() -> str:
    return " or ".join(sorted(str(t.run_checkpoint) for t in analysable_tasks()))


def detect_task(run_dir: str | Path) -> TaskSpec:
    """The task of a finished run folder (by the checkpoint it holds).

    Raises:
        SarbridgeError: the folder is missing. CheckpointError: it holds no run checkpoint.
    """
    p = Path(run_dir)
    if not p.is_dir():
        raise SarbridgeError(f"run folder '{p}' not found", "pass the --out folder of 'sarbridge train' or 'geo train'")
    task = task_of_run(p)
    if task is None:
        raise CheckpointError(f"run folder '{p}' holds no checkpoint ({_run_files()})",
                              "pass a finished training run folder (or an ablation folder)")
    return task


def detect_run(run_dir: str | Path) -> str:
    """The task name of a finished run folder: ``"reid"`` (``best.pt``) or ``"geo"`` (``geo_model.pt``).

    Raises:
        SarbridgeError: the folder is missing or holds neither checkpoint.
    """
    return detect_task(run_dir).name


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds the checkpoint of a finished run of a task with a gap analysis."""
    return task_of_run(path) is not None


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


# ----------------------------------------------------------------------------------- analysis files


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    return str(v)


def analysis_markdown(result: dict[str, Any]) -> str:
    """``analysis.md``: stages side by side per metric, the change, and the metric's reading."""
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
    run = Path(run_dir)
    if split not in SPLITS:
        raise SarbridgeError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
    if method not in METHODS:
        raise SarbridgeError(f"unknown projection method '{method}'", f"use one of {', '.join(METHODS)}")
    task = detect_task(run)
    assert task.features is not None  # detect_task only returns tasks with a gap analysis
    dev = resolve_device(device)
    feats = task.features(run, split, max_samples, dev, data=data, progress=progress, seed=seed)
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
        "run": str(run), "task": task.name, "split": split, "samples": {"optical": n_opt, "sar": n_sar},
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
    "IMAGE_NAME", "SPLITS", "STAGES", "STAGE_TITLES", "analysis_markdown", "analyze_run", "analyze_runs",
    "comparison_markdown", "detect_run", "detect_task", "expand_runs", "is_run_dir", "run_names", "write_comparison",
]
