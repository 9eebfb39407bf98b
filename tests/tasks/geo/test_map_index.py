"""index build --map: streamed windows, no-data cells, chunked commits, resume, workers, the CLI.

Reference: the pre-streaming build (whole map in memory, every cell prepared and embedded in one
batch) written out here in a few lines; the streamed index must hold the same vectors (1e-5) and
the same metadata.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sarbridge.core.errors import ConfigError, DataError, SarbridgeError
from sarbridge.data.georaster import read_georaster
from sarbridge.data.records import OPTICAL
from sarbridge.retrieval import index as index_pkg
from sarbridge.retrieval.index import EmbeddingIndex
from sarbridge.tasks.geo import map_index
from sarbridge.tasks.geo.bundle import build_encoder, load_geo_model, save_geo_model
from sarbridge.tasks.geo.datasets import MODALITY_INDEX, prepare_patch
from sarbridge.tasks.geo.grid import make_grid
from sarbridge.tasks.geo.map_index import PAUSE_ENV, build_map_index

pytest.importorskip("rasterio")

TINY = ["data.patch_size=16", "data.image_size=[16,16]", "model.embed_dim=16", "eval.batch_size=4", "device=cpu",
        "model.backbone_kwargs={layers: [1, 1, 1, 1], channels: [4, 8, 8, 8], stem_width: 4}"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the tiny convolutions run several times faster on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny geo model (16 px patches, 16-d embeddings): enough to test indexing."""
    from sarbridge.resources import resource_path
    from sarbridge.tasks.geo.config import load_geo_config

    cfg = load_geo_config(resource_path("geo_demo.yaml"), TINY)
    torch.manual_seed(0)
    return save_geo_model(tmp_path_factory.mktemp("model") / "geo_model.pt", cfg, build_encoder(cfg, False), None,
                          {"patch_size_m": 8.0})


@pytest.fixture
def geo_map_path(tmp_path: Path) -> Path:
    from conftest import geo_write

    return geo_write(tmp_path / "map.tif")  # 64 x 96 px: 4 x 6 cells of 16 px


def _reference(map_path: Path, model_path: Path) -> tuple[np.ndarray, list[dict]]:
    """The in-memory build: read everything, prepare every cell, embed all in one batch."""
    model = load_geo_model(model_path)
    raster = read_georaster(map_path)
    grid = make_grid(raster, model.cfg.data.patch_size)
    x = torch.stack([prepare_patch(grid.crop(i), OPTICAL, model.spec, "ref") for i in range(len(grid))])
    with torch.no_grad():
        emb = model.encoder.eval().embed(x, torch.full((len(x),), MODALITY_INDEX[OPTICAL])).float().numpy()
    centers, lonlat = grid.centers(), grid.lonlat()
    meta = [{"id": i, "cell": i, "row": c.row, "col": c.col, "x": float(centers[i, 0]), "y": float(centers[i, 1]),
             "lon": float(lonlat[i, 0]), "lat": float(lonlat[i, 1]), "footprint": [float(v) for v in grid.footprint(i)],
             "source": f"{map_path.name}[r{c.row},c{c.col}]", "modality": OPTICAL} for i, c in enumerate(grid.cells)]
    return emb, meta


def _same(a: Path, b: Path, atol: float = 1e-6) -> None:
    x, y = EmbeddingIndex.load(a), EmbeddingIndex.load(b)
    assert np.allclose(x.embeddings(), y.embeddings(), atol=atol, rtol=0)
    assert x.metadata == y.metadata
    keep = ("crs", "bounds", "patch_size", "stride", "patch_size_m", "gsd", "grid_cells", "skipped_nodata")
    assert {k: x.info[k] for k in keep} == {k: y.info[k] for k in keep}


def test_streamed_index_equals_the_in_memory_build(tmp_path: Path, geo_map_path: Path, tiny_model: Path) -> None:
    res = build_map_index(geo_map_path, tiny_model, tmp_path / "idx", chunk_size=5, workers=0, device="cpu",
                          progress=False)
    assert (res.cells, res.patches, res.skipped, res.chunks, res.resumed_chunks, res.embedded) == (24, 24, 0, 5, 0, 24)
    index = EmbeddingIndex.load(tmp_path / "idx")
    emb, meta = _reference(geo_map_path, tiny_model)
    assert np.allclose(index.embeddings(), emb, atol=1e-5, rtol=0)
    assert index.metadata == meta
    assert index.info["grid_cells"] == 24 and index.info["skipped_nodata"] == 0 and index.info["map_kind"] == "file"
    assert not (tmp_path / "idx" / ".build").exists() and (tmp_path / "idx" / "geo_model.pt").is_file()
    report = json.loads((tmp_path / "idx" / "build.json").read_text())
    assert report["patches"] == 24 and report["patches_per_s"] > 0 and (tmp_path / "idx" / "build.md").is_file()


def test_chunking_workers_and_tiles_do_not_change_the_index(tmp_path: Path, geo_map_path: Path,
                                                            tiny_model: Path) -> None:
    from affine import Affine

    from sarbridge.data.georaster import write_georaster

    build_map_index(geo_map_path, tiny_model, tmp_path / "a", chunk_size=24, workers=0, device="cpu", progress=False)
    build_map_index(geo_map_path, tiny_model, tmp_path / "b", chunk_size=7, workers=1, device="cpu", progress=False)
    _same(tmp_path / "a", tmp_path / "b")
    raster = read_georaster(geo_map_path)  # the same map as 3 x 2 tiles of uneven size: same vectors
    tiles, t = tmp_path / "tiles", raster.transform
    for r0, r1 in ((0, 40), (40, 64)):
        for c0, c1 in ((0, 30), (30, 70), (70, 96)):
            write_georaster(tiles / f"t{r0:02d}_{c0:02d}.tif", raster.array[:, r0:r1, c0:c1],
                            Affine(t.a, 0, t.c + c0 * t.a, 0, t.e, t.f + r0 * t.e), raster.crs)
    build_map_index(tiles, tiny_model, tmp_path / "c", chunk_size=24, workers=0, device="cpu", progress=False)
    a, c = EmbeddingIndex.load(tmp_path / "a"), EmbeddingIndex.load(tmp_path / "c")
    assert np.allclose(a.embeddings(), c.embeddings(), atol=1e-6, rtol=0)
    assert [m["x"] for m in a.metadata] == [m["x"] for m in c.metadata] and c.info["map_kind"] == "tiles"


def _write_nodata_map(path: Path, zero_rows: int, seed: int = 0) -> Path:
    import rasterio
    from affine import Affine

    arr = np.random.default_rng(seed).integers(1, 256, size=(3, 64, 96)).astype(np.uint8)
    arr[:, :zero_rows, :] = 0
    arr[:, 40:, 80:] = 0  # the lower-right cell (rows 2-3, col 5) is no-data
    with rasterio.open(path, "w", driver="GTiff", height=64, width=96, count=3, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 5700000), nodata=0) as dst:
        dst.write(arr)
    return path


def test_no_data_cells_are_skipped_and_ids_stay_positions(tmp_path: Path, tiny_model: Path) -> None:
    path = _write_nodata_map(tmp_path / "nd.tif", zero_rows=16)  # first cell row empty
    res = build_map_index(path, tiny_model, tmp_path / "idx", chunk_size=4, workers=0, device="cpu", progress=False)
    skipped = set(range(6)) | {23}  # row 0, and cell (3, 5); cell (2, 5) still has rows 32-39 of data
    assert (res.patches, res.skipped) == (24 - len(skipped), len(skipped))
    index = EmbeddingIndex.load(tmp_path / "idx")
    assert [m["cell"] for m in index.metadata] == [i for i in range(24) if i not in skipped]
    assert [m["id"] for m in index.metadata] == list(range(len(index)))
    assert index.info["skipped_nodata"] == len(skipped)


def test_map_without_valid_pixels_fails_and_keeps_the_old_index(tmp_path: Path, geo_map_path: Path,
                                                                 tiny_model: Path) -> None:
    out = tmp_path / "idx"
    build_map_index(geo_map_path, tiny_model, out, workers=0, device="cpu", progress=False)
    before = EmbeddingIndex.load(out).embeddings()
    empty = _write_nodata_map(tmp_path / "empty.tif", zero_rows=64)
    with pytest.raises(DataError, match=r"has no valid pixels \(all 24 grid cells are no-data\); fix: "):
        build_map_index(empty, tiny_model, out, overwrite=True, workers=0, device="cpu", progress=False)
    assert np.array_equal(EmbeddingIndex.load(out).embeddings(), before) and not (out / ".build").exists()


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the build die (like a kill) once ``n`` chunks are committed."""
    real = map_index._save_chunk
    count = {"n": 0}

    class Killed(Exception):
        pass

    def save(*args, **kwargs):
        if count["n"] == n:
            raise Killed
        real(*args, **kwargs)
        count["n"] += 1

    monkeypatch.setattr(map_index, "_save_chunk", save)


def test_interrupted_build_resumes_refuses_changes_and_ends_identical(tmp_path: Path, geo_map_path: Path,
                                                                      tiny_model: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"chunk_size": 5, "workers": 0, "device": "cpu", "progress": False}
    build_map_index(geo_map_path, tiny_model, tmp_path / "whole", **kw)
    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(Exception, match="Killed|^$"):
            build_map_index(geo_map_path, tiny_model, out, **kw)
    assert sorted(p.name for p in (out / ".build").glob("chunk_*.npz")) == ["chunk_000000.npz", "chunk_000001.npz"]
    with pytest.raises(SarbridgeError, match=r"holds an interrupted index build.*fix: pass --resume"):
        build_map_index(geo_map_path, tiny_model, out, **kw)
    with pytest.raises(DataError, match=r"started with another grid \(--patch-size/--stride\)"):
        build_map_index(geo_map_path, tiny_model, out, resume=True, stride=8, **kw)
    with pytest.raises(DataError, match=r"started with another chunk size"):
        build_map_index(geo_map_path, tiny_model, out, resume=True, **{**kw, "chunk_size": 6})
    from conftest import geo_write

    other = geo_write(tmp_path / "other.tif", seed=3)
    with pytest.raises(DataError, match=r"started with another map \(--map\)"):
        build_map_index(other, tiny_model, out, resume=True, **kw)
    with pytest.raises(ConfigError, match="both given"):
        build_map_index(geo_map_path, tiny_model, out, resume=True, overwrite=True, **kw)
    res = build_map_index(geo_map_path, tiny_model, out, resume=True, **kw)
    assert (res.resumed_chunks, res.embedded, res.patches) == (2, 14, 24)
    _same(out, tmp_path / "whole", atol=0)
    again = build_map_index(geo_map_path, tiny_model, out, resume=True, **kw)  # complete: returned as is
    assert again.patches == 24 and again.embedded == 0
    with pytest.raises(SarbridgeError, match="already holds an index"):
        build_map_index(geo_map_path, tiny_model, out, **kw)


def test_killed_cli_build_resumes_to_the_same_index(tmp_path: Path, geo_map_path: Path, tiny_model: Path) -> None:
    """A real process killed with SIGKILL between chunks (slowed by the test-only pause variable)."""
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "sarbridge", "index", "build", "--map", str(geo_map_path), "--model",
            str(tiny_model), "--out", str(out), "--chunk-size", "5", "--workers", "0", "--device", "cpu", "--quiet"]
    env = {**os.environ, PAUSE_ENV: "60", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".build" / "chunk_000000.npz").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (out / "manifest.json").exists()
    res = build_map_index(geo_map_path, tiny_model, out, resume=True, chunk_size=5, workers=0, device="cpu",
                          progress=False)
    assert res.resumed_chunks == 1 and res.embedded == 19
    build_map_index(geo_map_path, tiny_model, tmp_path / "whole", chunk_size=5, workers=0, device="cpu",
                    progress=False)
    _same(out, tmp_path / "whole", atol=0)


def test_target_recall_stores_the_tuned_settings(tmp_path: Path, geo_map_path: Path, tiny_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"workers": 0, "device": "cpu", "progress": False}
    if hasattr(index_pkg, "tune_search"):  # the real tuner: a flat (exact) index has nothing to tune
        res = build_map_index(geo_map_path, tiny_model, tmp_path / "real", target_recall=0.9, **kw)
        assert res.search is not None and res.search["kind"] == "flat" and res.search["recall_at_k"] == 1.0
        assert EmbeddingIndex.load(tmp_path / "real").info["search"] == res.search
    monkeypatch.delattr(index_pkg, "tune_search", raising=False)
    with pytest.raises(ConfigError, match="needs sarbridge.retrieval.index.tune_search"):
        build_map_index(geo_map_path, tiny_model, tmp_path / "no", target_recall=0.9, **kw)
    calls = []

    def fake_tune(index, sample, target_recall, k=10):
        calls.append((len(index), sample.shape, target_recall, k))
        return {"kind": index.kind, "recall_at_10": 1.0}

    monkeypatch.setattr(index_pkg, "tune_search", fake_tune, raising=False)
    with pytest.raises(ConfigError, match="outside"):
        build_map_index(geo_map_path, tiny_model, tmp_path / "bad", target_recall=1.5, **kw)
    res = build_map_index(geo_map_path, tiny_model, tmp_path / "idx", target_recall=0.9, **kw)
    assert calls == [(24, (24, 16), 0.9, 10)]
    assert res.search == {"kind": "flat", "recall_at_10": 1.0}
    assert EmbeddingIndex.load(tmp_path / "idx").info["search"] == res.search


def test_cli_build_index_reports_throughput_and_refuses_in_one_line(tmp_path: Path, geo_map_path: Path,
                                                                    tiny_model: Path, capsys) -> None:
    from sarbridge.app.cli import main

    base = ["index", "build", "--map", str(geo_map_path), "--model", str(tiny_model), "--out",
            str(tmp_path / "idx"), "--workers", "0", "--device", "cpu", "--quiet"]
    assert main(base) == 0
    printed = capsys.readouterr().out
    assert "indexed 24 patches of 24 grid cells" in printed and "patches/s" in printed
    assert main([*base, "--resume", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fix: " in err and "\n" not in err
    assert main([*base, "--overwrite", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["patches"] == 24 and facts["processes"] == 1 and facts["search"] is None
    assert main([*base[:3], str(tmp_path / "missing.vrt"), *base[4:], "--overwrite"]) == 2
    assert "not found" in capsys.readouterr().err
