"""The demo: train and evaluate on the embedded HOSS sample or on a generated set.

``sarbridge demo`` then measures the modality gap and writes ``report.html`` (:mod:`sarbridge.app.cli.reid`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
) -> dict[str, Any]:
    """Train + evaluate with the demo config.

    Args:
        out_dir: run folder (results, checkpoints; the generated data goes to ``out_dir/data``).
        data: ``hoss`` for the embedded real sample, ``synthetic`` for a generated set, or a folder.
        overrides: extra ``key=value`` config overrides.
        num_ids: identities of the generated set.
        seed: seed of the generated set.
        progress: show progress bars.

    Returns:
        The test metrics (as in ``metrics.json``); empty on a non-zero rank of a distributed run.
    """
    out = Path(out_dir)
    if data == "hoss":
        root = resource_path("hoss-sample") / "HOSS"
    elif data == "synthetic":
        root = out / "data"
        if not (root / "meta.json").is_file():
            generate_hoss_dataset(root, num_ids=num_ids, seed=seed, progress=progress)
    else:
        root = Path(data)
    cfg = load_reid_config(demo_config_path(), [f"data.root={root}", *(overrides or [])])
    return train_reid(cfg, out, progress=progress, overwrite=True)
