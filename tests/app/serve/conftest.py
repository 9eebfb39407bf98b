"""Fixtures of the viewer tests: a tiny re-ID gallery index and a tiny geo map index (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest

GEO_TINY = ["data.patch_size=32", "data.image_size=[32,32]", "data.queries=120", "data.batch_size=16",
            "model.embed_dim=32", "loss.wasserstein.hidden=16", "optim.epochs=2", "refine.epochs=2", "matcher.steps=4", "matcher.batch_size=4",
            "refine.hidden=16", "refine.heads=2", "device=cpu", "eval.batch_size=64"]


@pytest.fixture(scope="session")
def reid_index(tmp_path_factory: pytest.TempPathFactory, hoss_sample_root: Path) -> Path:
    """One epoch of a 1-block ViT on the embedded HOSS sample, its gallery indexed (flat)."""
    from sarbridge.tasks.reid.gallery import build_gallery_index
    from sarbridge.tasks.reid.task import train_reid
    from tiny_setup import tiny_config

    run = tmp_path_factory.mktemp("serve_run")
    train_reid(tiny_config(hoss_sample_root, epochs=1), run, progress=False, evaluate_test=False)
    ckpt = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    return build_gallery_index(ckpt, hoss_sample_root, run / "gallery", device="cpu", progress=False)


@pytest.fixture(scope="session")
def geo_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 192 x 192 px synthetic scene (0.5 m, EPSG:32631), a tiny trained geo model, the map's index.

    Returns:
        ``(scene folder with optical.tif / sar.tif, index folder)``.
    """
    from sarbridge.data.synthetic.scene import generate_scene
    from sarbridge.resources import resource_path
    from sarbridge.tasks.geo.config import load_geo_config
    from sarbridge.tasks.geo.map_index import build_geo_index
    from sarbridge.tasks.geo.run import train_geo

    root = tmp_path_factory.mktemp("serve_geo")
    scene = generate_scene(root / "scene", height=192, width=192, gsd=0.5, seed=0, looks=4)
    cfg = load_geo_config(resource_path("geo_demo.yaml"), [f"data.root={root / 'scene'}", *GEO_TINY])
    train_geo(cfg, root / "run", progress=False)
    index = build_geo_index(scene.optical, root / "run" / "geo_model.pt", root / "index", device="cpu",
                            progress=False)
    return root / "scene", index


def _crop_sar(scene: Path, out: Path, col0: int, row0: int, side: int = 32) -> Path:
    """Write the ``side`` x ``side`` window of the scene's SAR at ``(col0, row0)`` as a GeoTIFF."""
    from affine import Affine

    from sarbridge.data.georaster import read_georaster, write_georaster

    sar = read_georaster(scene / "sar.tif")
    t = sar.transform
    return write_georaster(out, sar.window(col0, row0, side, side),
                           Affine(t.a, 0, t.c + col0 * t.a, 0, t.e, t.f + row0 * t.e), sar.crs)


@pytest.fixture(scope="session")
def crop_sar():
    """``crop_sar(scene, out, col0, row0, side=32)`` writes a georeferenced SAR crop and returns its path."""
    return _crop_sar
