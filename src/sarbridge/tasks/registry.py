"""Every task, registered once: what the app needs to know about it.

A :class:`TaskSpec` names a task (``reid``, ``pretrain``, ``geo``, ``bridge``) and gives its config
class, its checkpoint loader, its evaluation entry, what its run folders report
(:class:`ReportSpec`: titles, metric table, legend and captions), how its embedding is exported
(:class:`ExportSpec`), the feature extractor of the modality-gap analysis and which search indexes
are its own. The app (:mod:`sarbridge.app`) asks the registry instead of branching on task names.

Importing this module stays light: the task modules that pull in torch models, timm or diffusers
are imported on first use, inside the small loader functions below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.errors import CheckpointError
from sarbridge.core.utils import resolve_device
from sarbridge.data.splits import PROTOCOL_TITLES
from sarbridge.tasks.geo import results as geo_results
from sarbridge.tasks.reid import results as reid_results

if TYPE_CHECKING:
    import torch

    from sarbridge.data.transforms import PreprocessSpec
    from sarbridge.tasks.run_features import RunFeatures


@dataclass(frozen=True)
class ReportSpec:
    """What the HTML report of a task's run folder shows.

    Attributes:
        title: how the header names the task.
        sections: ``metrics.json`` entry -> display title (protocols or stages), in order.
        result_keys: other ``metrics.json`` entries that are results, not run facts.
        table: ``metrics -> (header, rows)`` of the metrics table.
        note: ``metrics -> sentence`` under the metrics table (empty for none).
        cmc_ylabel: y axis of the CMC curves.
        ranked_note: what the captions of the ranked lists say.
        query_caption: caption of a query (a ``rankings.json`` query entry).
        candidate_caption: ``(rank, top entry, item) -> caption`` of a listed gallery item.
        query_columns: extra ``(title, query field)`` columns of the per-query tables.
        need_thumb: only queries with a saved thumbnail can be shown.
        claims: whether ``metrics.json`` content is this task's (run folders without
            ``rankings.json``); None for a task told apart by its rankings only.
        figures: ``(file, caption)`` of task figures in the run folder the report shows when present.
    """

    title: str
    sections: Mapping[str, str]
    result_keys: tuple[str, ...]
    table: Callable[[dict[str, Any]], tuple[list[str], list[list[Any]]]]
    note: Callable[[dict[str, Any]], str]
    cmc_ylabel: str
    ranked_note: str
    query_caption: Callable[[dict[str, Any]], str]
    candidate_caption: Callable[[int, dict[str, Any], dict[str, Any]], str]
    query_columns: tuple[tuple[str, str], ...] = ()
    need_thumb: bool = False
    claims: Callable[[dict[str, Any]], bool] | None = None
    figures: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ExportSpec:
    """How a task's retrieval embedding is exported (:mod:`sarbridge.app.export`).

    Attributes:
        load: ``checkpoint -> (model, preprocessing)``, the model in eval mode on the CPU.
        embed: ``(model, image, modality, size or None) -> embedding`` (before L2 normalisation).
        uses_size: whether the model takes the ship-size input.
    """

    load: Callable[[str | Path], tuple[torch.nn.Module, PreprocessSpec]]
    embed: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    uses_size: Callable[[torch.nn.Module], bool]


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Attributes:
        name: the task name (also the ``task`` of its checkpoints).
        description: one line for humans.
        config_class: returns the task's config dataclass.
        load_model: ``(checkpoint, device) -> the task's inference object``.
        evaluate: ``(checkpoint, out_dir, device, progress) -> metrics``: evaluate a checkpoint on
            the data it was trained on and write the results into ``out_dir``; None when the task
            has no separate evaluation.
        run_checkpoint: the file a finished run folder holds (for the gap analysis), or None.
        features: the gap analysis' feature extractor (see :mod:`sarbridge.tasks.run_features`), or None.
        report: what the HTML report shows for the task's runs, or None.
        export: how its embedding is exported to ONNX, or None.
        owns_index: whether a search index (its ``info``) was built by this task, or None.
    """

    name: str
    description: str
    config_class: Callable[[], type]
    load_model: Callable[[str | Path, str], Any]
    evaluate: Callable[[str | Path, str | Path, str, bool], dict[str, Any]] | None = None
    run_checkpoint: str | None = None
    features: Callable[..., RunFeatures] | None = None
    report: ReportSpec | None = None
    export: ExportSpec | None = None
    owns_index: Callable[[dict[str, Any]], bool] | None = None


# ----------------------------------------------------------------------------------- re-identification
def _reid_config() -> type:
    from sarbridge.tasks.reid.config import ExperimentConfig  # noqa: PLC0415 - lazy: torchvision

    return ExperimentConfig


def _reid_model(path: str | Path, device: str = "auto") -> Any:
    from sarbridge.tasks.reid.embedder import Embedder  # noqa: PLC0415 - lazy: torch models

    return Embedder.from_checkpoint(path, device)


def _reid_evaluate(checkpoint: str | Path, out_dir: str | Path, device: str = "auto",
                   progress: bool = True) -> dict[str, Any]:
    from sarbridge.tasks.reid.task import evaluate_reid  # noqa: PLC0415 - lazy: timm backbones

    return evaluate_reid(checkpoint, out_dir, device=device, progress=progress)


def _reid_features(*args: Any, **kwargs: Any) -> RunFeatures:
    from sarbridge.tasks.reid.run_features import reid_features  # noqa: PLC0415 - lazy: timm backbones

    return reid_features(*args, **kwargs)


def _reid_export_load(path: str | Path) -> tuple[torch.nn.Module, PreprocessSpec]:
    from sarbridge.tasks.reid.task import model_from_checkpoint  # noqa: PLC0415 - lazy: timm backbones

    model, spec, _, _ = model_from_checkpoint(path)
    return model, spec


def _reid_export_embed(model: Any, image: Any, modality: Any, size: Any = None) -> Any:
    return model.centre(model.backbone(image, modality, size))  # what ReIDModel.embed returns


def _reid_uses_size(model: Any) -> bool:
    return getattr(model.backbone, "size_proj", None) is not None


REID = TaskSpec(
    name=reid_results.TASK,
    description="ship re-identification across optical and SAR chips",
    config_class=_reid_config,
    load_model=_reid_model,
    evaluate=_reid_evaluate,
    run_checkpoint=reid_results.RUN_CHECKPOINT,
    features=_reid_features,
    report=ReportSpec(
        title=reid_results.REPORT_TITLE,
        sections=PROTOCOL_TITLES,
        result_keys=reid_results.RESULT_KEYS,
        table=reid_results.report_table,
        note=reid_results.report_note,
        cmc_ylabel=reid_results.CMC_YLABEL,
        ranked_note=reid_results.RANKED_NOTE,
        query_caption=reid_results.query_caption,
        candidate_caption=reid_results.candidate_caption,
    ),
    export=ExportSpec(_reid_export_load, _reid_export_embed, _reid_uses_size),
    owns_index=lambda info: info.get("task") == reid_results.TASK,
)


# ----------------------------------------------------------------------------------- pretraining
def _pretrain_config() -> type:
    from sarbridge.tasks.pretrain.config import PretrainConfig  # noqa: PLC0415 - lazy: torchvision

    return PretrainConfig


def _pretrain_model(path: str | Path, device: str = "auto") -> Any:
    from sarbridge.tasks.pretrain.task import backbone_from_checkpoint  # noqa: PLC0415 - lazy: timm

    backbone = backbone_from_checkpoint(path)[0]
    return backbone.to(resolve_device(device)).eval()


PRETRAIN = TaskSpec(
    name="pretrain",
    description="contrastive optical/SAR pretraining of the re-identification backbone",
    config_class=_pretrain_config,
    load_model=_pretrain_model,
)


# ----------------------------------------------------------------------------------- localisation
def _geo_config() -> type:
    from sarbridge.tasks.geo.config import GeoConfig  # noqa: PLC0415 - lazy: torchvision

    return GeoConfig


def _geo_model(path: str | Path, device: str = "auto") -> Any:
    from sarbridge.tasks.geo.bundle import load_geo_model  # noqa: PLC0415 - lazy: torch models

    bundle = load_geo_model(path)
    dev = resolve_device(device)
    bundle.encoder.to(dev)
    if bundle.refiner is not None:
        bundle.refiner.to(dev)
    return bundle


def _geo_evaluate(checkpoint: str | Path, out_dir: str | Path, device: str = "auto",
                  progress: bool = True) -> dict[str, Any]:
    from sarbridge.tasks.geo.run import evaluate_geo  # noqa: PLC0415 - lazy: torch models

    return evaluate_geo(checkpoint, None, out_dir, device_name=device, progress=progress)


def _geo_features(*args: Any, **kwargs: Any) -> RunFeatures:
    from sarbridge.tasks.geo.run_features import geo_features  # noqa: PLC0415 - lazy: torch models

    return geo_features(*args, **kwargs)


def _geo_export_load(path: str | Path) -> tuple[torch.nn.Module, PreprocessSpec]:
    from sarbridge.tasks.geo.bundle import load_geo_model  # noqa: PLC0415 - lazy: torch models

    bundle = load_geo_model(path)
    return bundle.encoder, bundle.spec


def _geo_export_embed(model: Any, image: Any, modality: Any, size: Any = None) -> Any:
    return model(image, modality)["embedding"]


GEO = TaskSpec(
    name="geo",
    description="SAR patch to optical map localisation",
    config_class=_geo_config,
    load_model=_geo_model,
    evaluate=_geo_evaluate,
    run_checkpoint=geo_results.RUN_CHECKPOINT,
    features=_geo_features,
    report=ReportSpec(
        title=geo_results.REPORT_TITLE,
        sections=geo_results.STAGE_TITLES,
        result_keys=(),
        table=geo_results.report_table,
        note=geo_results.report_note,
        cmc_ylabel=geo_results.CMC_YLABEL,
        ranked_note=geo_results.RANKED_NOTE,
        query_caption=geo_results.query_caption,
        candidate_caption=geo_results.candidate_caption,
        query_columns=geo_results.QUERY_COLUMNS,
        need_thumb=True,
        claims=geo_results.is_localisation,
        figures=geo_results.REPORT_FIGURES,
    ),
    export=ExportSpec(_geo_export_load, _geo_export_embed, lambda model: False),
    owns_index=lambda info: info.get("kind") == geo_results.INDEX_KIND,
)


# ----------------------------------------------------------------------------------- translation
def _bridge_config() -> type:
    from sarbridge.tasks.bridge.config import DiffusionConfig  # noqa: PLC0415 - lazy: diffusers

    return DiffusionConfig


def _bridge_model(path: str | Path, device: str = "auto") -> Any:
    from sarbridge.tasks.bridge.translate import BridgeTranslator  # noqa: PLC0415 - lazy: diffusers

    return BridgeTranslator.from_checkpoint(path, device)


BRIDGE = TaskSpec(
    name="bridge",
    description="Brownian Bridge diffusion for optical <-> SAR image translation",
    config_class=_bridge_config,
    load_model=_bridge_model,
)

#: The tasks, in the order a run folder, ``metrics.json`` or an index is matched to its task
#: (a localisation run is recognised by its own files first; re-identification is the default).
TASKS: tuple[TaskSpec, ...] = (GEO, REID, PRETRAIN, BRIDGE)
#: Checkpoint ``task`` values written by older trainers, mapped to today's task names.
CHECKPOINT_TASKS: dict[str, str] = {"diffusion": "bridge"}
#: The task whose report a run folder gets when nothing else claims it.
DEFAULT_REPORT_TASK = "reid"


def task_names() -> list[str]:
    """Names of the registered tasks."""
    return [t.name for t in TASKS]


def get_task(name: str) -> TaskSpec:
    """The task called ``name`` (a checkpoint's ``task`` value is accepted too).

    Raises:
        KeyError: no such task.
    """
    name = CHECKPOINT_TASKS.get(name, name)
    for t in TASKS:
        if t.name == name:
            return t
    raise KeyError(f"unknown task '{name}' (known: {', '.join(task_names())})")


def task_of_checkpoint(state: Mapping[str, Any]) -> TaskSpec | None:
    """The task a loaded checkpoint dict belongs to (its ``task`` entry), or None."""
    try:
        return get_task(str(state.get("task")))
    except KeyError:
        return None


def load_model(path: str | Path, device: str = "auto") -> Any:
    """Load any sarbridge checkpoint as its task's inference object.

    ``reid``: an :class:`~sarbridge.tasks.reid.embedder.Embedder`; ``geo``: the
    :class:`~sarbridge.tasks.geo.bundle.GeoModel` bundle (encoder and refiner on ``device``);
    ``pretrain``: the pretrained backbone (eval mode, on ``device``); ``bridge``: a
    :class:`~sarbridge.tasks.bridge.translate.BridgeTranslator`.

    Args:
        path: the checkpoint file.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        CheckpointError: a missing, damaged or foreign file, or a checkpoint of an intermediate
            training stage (e.g. ``geo-coarse``) that is no model of its own.
    """
    state = load_checkpoint(path)
    spec = task_of_checkpoint(state)
    if spec is None:
        raise CheckpointError(f"checkpoint '{path}' is for task '{state.get('task')}', which has no loadable model",
                              f"pass the final checkpoint of a run ({', '.join(task_names())})")
    del state
    return spec.load_model(path, device)


def analysable_tasks() -> list[TaskSpec]:
    """The tasks with a modality-gap analysis, in matching order."""
    return [t for t in TASKS if t.features is not None and t.run_checkpoint]


def task_of_run(run_dir: str | Path) -> TaskSpec | None:
    """The task whose finished run folder ``run_dir`` is (by the checkpoint it holds), or None."""
    p = Path(run_dir)
    for t in analysable_tasks():
        if (p / str(t.run_checkpoint)).is_file():
            return t
    return None


def report_task(metrics: Mapping[str, Any], rankings_task: str | None = None) -> TaskSpec:
    """The task whose report a run folder gets: the task its ``rankings.json`` names, else the one
    that claims its ``metrics.json``, else :data:`DEFAULT_REPORT_TASK`."""
    if rankings_task is not None:
        try:
            spec = get_task(rankings_task)
            if spec.report is not None:
                return spec
        except KeyError:
            pass
    else:
        for t in TASKS:
            if t.report is not None and t.report.claims is not None and t.report.claims(dict(metrics)):
                return t
    return get_task(DEFAULT_REPORT_TASK)


def report_result_keys() -> set[str]:
    """``metrics.json`` entries that are some task's results (protocols, stages, ...), not run facts."""
    return {k for t in TASKS if t.report is not None for k in (*t.report.sections, *t.report.result_keys)}


def task_of_index(info: Mapping[str, Any]) -> TaskSpec | None:
    """The task that built a search index (from the index's ``info``), or None."""
    for t in TASKS:
        if t.owns_index is not None and t.owns_index(dict(info)):
            return t
    return None


__all__ = [
    "BRIDGE", "CHECKPOINT_TASKS", "DEFAULT_REPORT_TASK", "GEO", "PRETRAIN", "REID", "TASKS", "ExportSpec", "ReportSpec",
    "TaskSpec", "analysable_tasks", "get_task", "load_model", "report_result_keys", "report_task", "task_names",
    "task_of_checkpoint", "task_of_index", "task_of_run",
]
