"""The task registry: one spec per task, light to import, and the lookups the app relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sarbridge.data.splits import PROTOCOL_TITLES
from sarbridge.tasks import registry
from sarbridge.tasks.geo.results import STAGE_TITLES
from sarbridge.tasks.registry import (
    BRIDGE,
    GEO,
    PRETRAIN,
    REID,
    get_task,
    report_result_keys,
    report_task,
    task_of_checkpoint,
    task_of_index,
    task_of_run,
)


def test_every_task_is_registered_once() -> None:
    assert sorted(registry.task_names()) == ["bridge", "geo", "pretrain", "reid"]
    assert len({id(t) for t in registry.TASKS}) == len(registry.TASKS) == 4
    for t in registry.TASKS:
        assert get_task(t.name) is t and t.description


def test_importing_the_registry_loads_no_model_code() -> None:
    code = ("import sys, sarbridge.tasks.registry\n"
            "heavy = ['timm', 'torchvision', 'diffusers', 'matplotlib', 'sarbridge.tasks.reid.task',\n"
            "         'sarbridge.tasks.geo.bundle', 'sarbridge.tasks.bridge.model', 'sarbridge.data.transforms']\n"
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_config_classes() -> None:
    from sarbridge.tasks.bridge.config import DiffusionConfig
    from sarbridge.tasks.geo.config import GeoConfig
    from sarbridge.tasks.pretrain.config import PretrainConfig
    from sarbridge.tasks.reid.config import ExperimentConfig

    assert REID.config_class() is ExperimentConfig and PRETRAIN.config_class() is PretrainConfig
    assert GEO.config_class() is GeoConfig and BRIDGE.config_class() is DiffusionConfig


def test_names_and_checkpoint_tasks() -> None:
    assert get_task("diffusion") is BRIDGE  # the task value bridge checkpoints carry
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        get_task("nope")
    assert task_of_checkpoint({"task": "geo"}) is GEO and task_of_checkpoint({"task": "pretrain"}) is PRETRAIN
    assert task_of_checkpoint({"task": "geo-coarse"}) is None and task_of_checkpoint({}) is None


def test_run_folders_are_told_apart_by_their_checkpoint(tmp_path: Path) -> None:
    reid, geo, both, none = (tmp_path / n for n in ("reid", "geo", "both", "none"))
    for d in (reid, geo, both, none):
        d.mkdir()
    (reid / "best.pt").write_bytes(b"")
    (geo / "geo_model.pt").write_bytes(b"")
    (both / "best.pt").write_bytes(b"")
    (both / "geo_model.pt").write_bytes(b"")
    assert task_of_run(reid) is REID and task_of_run(geo) is GEO
    assert task_of_run(both) is GEO  # the localisation bundle is the more specific file
    assert task_of_run(none) is None
    assert [t.name for t in registry.analysable_tasks()] == ["geo", "reid"]


def test_report_task_follows_rankings_then_metrics() -> None:
    assert report_task({}, "geo") is GEO and report_task({"coarse": {}}, "reid") is REID
    assert report_task({"coarse": {"top1": 1.0}}) is GEO
    assert report_task({"coarse": 3}) is REID and report_task({}) is REID
    assert report_task({}, "no-such-task") is REID and report_task({}, "pretrain") is REID  # no report of its own
    assert report_result_keys() == set(PROTOCOL_TITLES) | set(STAGE_TITLES) | {"protocol_source"}
    assert GEO.report is not None and GEO.report.sections == STAGE_TITLES and GEO.report.need_thumb
    assert REID.report is not None and REID.report.sections == PROTOCOL_TITLES and not REID.report.need_thumb


def test_indexes_belong_to_the_task_that_built_them() -> None:
    assert task_of_index({"task": "reid", "checkpoint": "x"}) is REID
    assert task_of_index({"kind": "geo", "map": "m.tif"}) is GEO
    assert task_of_index({}) is None and task_of_index({"task": "geo"}) is None


def test_only_retrieval_tasks_export_an_embedding() -> None:
    assert REID.export is not None and GEO.export is not None
    assert PRETRAIN.export is None and BRIDGE.export is None
    assert REID.evaluate is not None and GEO.evaluate is not None
