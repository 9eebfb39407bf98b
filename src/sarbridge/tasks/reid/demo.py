"""The demo: train and evaluate on the embedded HOSS sample or on a generated set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sarbridge.core.config import load_config
from sarbridge.tasks.reid.task import train_reid
from sarbridge.resources import resource_path


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
    analyze: bool = True,
) -> dict[str, Any]:
    """Train + evaluate with the demo config, then analyse the modality gap and write the report.

    Args:
        out_dir: run folder (results, checkpoints; the generated data goes to ``out_dir/data``).
        data: ``hoss`` for the embedded real sample, ``synthetic`` for a generated set, or a folder.
        overrides: extra ``key=value`` config overrides.
        num_ids: identities of the generated set.
        seed: seed of the generated set.
        progress: show progress bars.
        analyze: measure the optical/SAR feature gap before and after training
            (:func:`~sarbridge.app.report.analyze.analyze_run`; shown in the report).

    Returns:
        The test metrics (as in ``metrics.json``) plus ``report``: the path of the
        ``report.html`` written at the end.
    """
    out = Path(out_dir)
    if data == "hoss":
        root = resource_path("hoss-sample") / "HOSS"
    elif data == "synthetic":
        from sarbridge.data.synthetic import generate_hoss_dataset

        root = out / "data"
        if not (root / "meta.json").is_file():
            generate_hoss_dataset(root, num_ids=num_ids, seed=seed, progress=progress)
    else:
        root = Path(data)
    cfg = load_config(demo_config_path(), [f"data.root={root}", *(overrides or [])])
    metrics = train_reid(cfg, out, progress=progress, overwrite=True)
    if not metrics:  # e.g. a non-zero rank of a distributed run: it evaluates nothing
        return metrics
    if analyze:
        from sarbridge.app.report.analyze import analyze_run

        analyze_run(out, device=cfg.device, progress=progress)
    from sarbridge.app.report.html import write_report

    metrics["report"] = str(write_report(out))
    return metrics
