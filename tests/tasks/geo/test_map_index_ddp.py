"""index build --map under torchrun: 2 gloo processes build the same index as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_map_index import _same, tiny_model  # noqa: F401 - the fixture is used by name

from ddp_launch import torchrun
from sarbridge.tasks.geo.map_index import build_map_index

pytest.importorskip("rasterio")


@pytest.mark.slow
def test_two_processes_build_the_single_process_index(tmp_path: Path, tiny_model: Path) -> None:  # noqa: F811
    from conftest import geo_write

    map_path = geo_write(tmp_path / "map.tif", height=80, width=112)  # 5 x 7 cells: chunks of 4, uneven shares
    build_map_index(map_path, tiny_model, tmp_path / "one", chunk_size=4, workers=0, device="cpu", progress=False)
    proc = torchrun(["-m", "sarbridge", "index", "build", "--map", str(map_path), "--model", str(tiny_model),
                     "--out", str(tmp_path / "two"), "--chunk-size", "4", "--workers", "0", "--device", "cpu",
                     "--quiet", "--json"], cwd=tmp_path)
    facts = json.loads(proc.stdout[proc.stdout.index("{"):])  # printed once, by rank 0
    assert facts["processes"] == 2 and facts["patches"] == 35 and facts["chunks"] == 9
    assert proc.stdout.count('"processes"') == 1
    _same(tmp_path / "two", tmp_path / "one", atol=1e-6)
    assert not (tmp_path / "two" / ".build").exists()
