"""The demo: train and evaluate on the embedded HOSS sample or on a generated set.

``sarbridge demo`` then measures the modality gap and writes ``report.html`` (:mod:`sarbridge.app.cli.reid`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.core.run import check_output_folder, plan_resume
from sarbridge.data.synthetic import generate_hoss_dataset
from sarbridge.resources import resource_path
from sarbridge.tasks.reid.config import load_reid_config
from sarbridge.tasks.reid.task import train_reid


def demo_config_path() -> Path:
    """The packaged CPU demo config (identical to ``configs/demo.yaml``)."""
    return resource_path("demo.yaml")


def run_demo(
    out_dir: str | Path,
    data: str = "hoss",
    overrides: list[str] | None = None,
    num_ids: int = 100,
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train + evaluate with the demo config.

    Output folder rule: a non-empty ``out_dir`` is refused unless ``resume`` (continue the demo in
    it: the generated data is kept when complete, training continues from ``last.pt`` with the
    folder's ``config.yaml``, a trained and evaluated run is not trained again) or ``overwrite``
    (start over; a generated set is regenerated).

    Args:
        out_dir: run folder (results, checkpoints; the generated data goes to ``out_dir/data``).
        data: ``hoss`` for the embedded real sample, ``synthetic`` for a generated set, or a folder.
        overrides: extra ``key=value`` config overrides.
        num_ids: identities of the generated set.
        seed: seed of the generated set.
        progress: show progress bars.
        resume: continue an interrupted demo in ``out_dir``.
        overwrite: start over in a used ``out_dir``.

    Returns:
        The test metrics (as in ``metrics.json``); empty on a non-zero rank of a distributed run.

    Raises:
        SarbridgeError: a used ``out_dir`` without ``resume``/``overwrite``; ``resume`` with
            overrides that differ from the demo's config.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other", "pass one of them")
    if not resume:
        check_output_folder(out, overwrite, what="demo folder")
    if data == "hoss":
        root = resource_path("hoss-sample") / "HOSS"
    elif data == "synthetic":
        root = out / "data"
        if resume and (root / "meta.json").is_file():
            params = json.loads((root / "meta.json").read_text(encoding="utf-8"))
            had = (params.get("params", {}).get("num_ids"), params.get("seed"))
            if had != (num_ids, seed):
                raise ConfigError(f"--resume keeps the demo's data; --ids {num_ids} differs from {root} "
                                  f"({had[0]} identities)", f"pass --ids {had[0]}, or --overwrite to start over")
        if overwrite or not (root / "meta.json").is_file():  # meta.json is written last: absent = incomplete
            generate_hoss_dataset(root, num_ids=num_ids, seed=seed, progress=progress)
    else:
        root = Path(data)
    settings = [f"data.root={root}", *(overrides or [])]
    if resume and (out / "last.pt").is_file():
        plan = plan_resume(out, load_reid_config, settings)
        plan.announce(out, f"sarbridge demo --resume ({', '.join(settings)})")
        if plan.finished:
            return _read_metrics(out)
        return train_reid(plan.cfg, out, progress=progress, resume=True)
    cfg = load_reid_config(demo_config_path(), settings)
    return train_reid(cfg, out, progress=progress, overwrite=True)


def _read_metrics(out: Path) -> dict[str, Any]:
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise DataError(f"'{out / 'metrics.json'}' is not a metrics file", "rerun the demo with --overwrite")
    return metrics
