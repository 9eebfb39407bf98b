"""The one checkpoint format: weights + config + preprocessing, written atomically.

A checkpoint is a ``torch.save`` dict::

    {"format": "sarbridge", "version": 1, "task": "reid", "epoch": int,
     "config": {...resolved experiment config...}, "preprocess": {...PreprocessSpec...},
     "num_classes": int, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "best": {...}, "history": [...]}

Training-state keys are absent from ``best.pt`` files meant for inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sarbridge.core.errors import CheckpointError
from sarbridge.core.utils import atomic_write

FORMAT = "sarbridge"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write a checkpoint: a crash leaves the previous file intact."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(Path(path), lambda p: torch.save(payload, p))


def load_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read a checkpoint on the CPU and check its format (and task, when given).

    Raises:
        CheckpointError: missing, unreadable, foreign or wrong-task file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{p}' not found", "pass the best.pt or last.pt of a training run")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint '{p}' cannot be read ({type(exc).__name__})", "the file is damaged; use another checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"'{p}' is not a sarbridge checkpoint", "pass a file written by 'sarbridge train'")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint '{p}' has format version {state['version']}", "upgrade sarbridge")
    if task is not None and state.get("task") != task:
        raise CheckpointError(f"checkpoint '{p}' is for task '{state.get('task')}', not '{task}'", "pass a checkpoint of this task")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly, turning shape/key mismatches into one clear error line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        detail = []
        if wrong:
            detail.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]}")
        if missing:
            detail.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise CheckpointError(
            f"checkpoint '{source}' does not fit this model architecture ({'; '.join(detail)})",
            "use the config the checkpoint was trained with, or a checkpoint of this architecture",
        )
    model.load_state_dict(state_dict)
