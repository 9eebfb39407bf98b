"""The README's examples run as written (slow: about half an hour on 2 CPU cores).

Each ``bash`` block of README.md runs in order in a fresh folder, with the README's placeholders
filled: ``path/to/HOSS`` is the embedded HOSS sample, ``configs/`` and ``tests/fixtures/`` are the
repository's, and the query images (``my_sar_patch.tif``, ``my_sar.tif``, ``my_sar.png``,
``chip_SAR.tif``) are cut from the data the examples generated. A few lines cannot run here and are
listed in ``NOT_RUN`` with the reason (tests/app/cli/test_readme_examples.py still parses them).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_readme_examples import example_commands

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "src" / "sarbridge" / "resources" / "hoss-sample" / "HOSS"

#: README lines that do not run on a CPU test machine, and why
NOT_RUN = {
    "torchrun": "needs several processes / GPUs (the distributed tests cover torchrun)",
    "configs/hoss_transoss.yaml": "ViT-B/16 with ImageNet weights from the Hugging Face hub (offline here)",
    "sarbridge serve": "starts a web server (tests/app/serve and make test-ui cover it)",
    "runs/ablation": "needs the output of the MOS ablation, which the README runs only in docs/mos.md",
}


def _placeholders(work: Path) -> None:
    (work / "path" / "to").mkdir(parents=True)
    shutil.copytree(SAMPLE, work / "path" / "to" / "HOSS")
    (work / "configs").symlink_to(REPO / "configs")
    (work / "tests").mkdir()
    (work / "tests" / "fixtures").symlink_to(REPO / "tests" / "fixtures")
    chip = next((work / "path" / "to" / "HOSS" / "query").glob("*_SAR.tif"))
    shutil.copyfile(chip, work / "chip_SAR.tif")


def _queries_from_scene(work: Path) -> None:
    """``my_sar_patch.tif`` / ``my_sar.tif`` (georeferenced windows of the scene's SAR) and ``my_sar.png``."""
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    with rasterio.open(work / "data" / "scene" / "sar.tif") as src:
        window = Window(700, 500, 200, 200)
        pixels = src.read(window=window)
        profile = {**src.profile, "width": 200, "height": 200, "transform": src.window_transform(window)}
    for name in ("my_sar_patch.tif", "my_sar.tif"):
        with rasterio.open(work / name, "w", **profile) as dst:
            dst.write(pixels)
    band = pixels.mean(axis=0).astype(np.float32)
    lo, hi = np.percentile(band, [1, 99])
    Image.fromarray((np.clip((band - lo) / (hi - lo + 1e-9), 0, 1) * 255).astype(np.uint8)).save(work / "my_sar.png")


@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _placeholders(work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SARBRIDGE_PROGRESS": "plain"}
    ran, skipped = [], []
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    for line, command in example_commands(REPO / "README.md"):
        launched = re.sub(r"^\$\s+", "", readme[line - 1].strip())  # example_commands keeps only what torchrun starts
        reason = next((why for key, why in NOT_RUN.items() if key in command or launched.startswith(key)), None)
        if reason:
            skipped.append((line, command, reason))
            continue
        if " geo locate " in f" {command} " and not (work / "my_sar_patch.tif").exists():
            _queries_from_scene(work)
        words = shlex.split(command, comments=True)
        proc = subprocess.run([sys.executable, "-m", "sarbridge", *words[1:]], cwd=work, env=env,
                              capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"README.md:{line}: `{command}` failed:\n{proc.stderr[-3000:]}"
        ran.append(command)
    assert len(ran) >= 20, ran
    assert all(reason for _, _, reason in skipped)
