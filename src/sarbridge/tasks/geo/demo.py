"""``sarbridge geo demo``: generate a georeferenced scene, train, index the map, locate a query, evaluate.

Everything runs on the CPU in a few minutes (``configs/geo_demo.yaml``: a tiny CNN on 128 px patches
of a 1024 x 1024 px scene at 0.5 m, resized to 64 px). The run folder gets the training outputs (``metrics.json``,
``results.md``, ``retrieval.png``, ``geo_model.pt``, ``rankings.json``), the scene (``scene/``), the map index
(``index/``) and an example query with its answer (``example_query.tif``, ``example_locate.json``); ``sarbridge geo
demo`` then measures the modality gap and writes ``report.html`` (:mod:`sarbridge.app.cli.geo`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.utils import atomic_write_json
from sarbridge.data.georaster import read_georaster, write_georaster
from sarbridge.data.synthetic.scene import generate_scene
from sarbridge.resources import resource_path
from sarbridge.tasks.geo.config import load_geo_config
from sarbridge.tasks.geo.locate import build_geo_index, locate
from sarbridge.tasks.geo.run import load_localisation, train_geo


def geo_demo_config_path() -> Path:
    """The packaged CPU demo config (identical to ``configs/geo_demo.yaml``)."""
    return resource_path("geo_demo.yaml")


def run_geo_demo(out_dir: str | Path, overrides: list[str] | None = None, size: int = 1024, seed: int = 0,
                 progress: bool = True) -> dict[str, Any]:
    """Generate, train, index, locate and evaluate.

    Args:
        out_dir: demo folder (replaced results if it holds an earlier demo).
        overrides: ``key=value`` overrides of the demo config.
        size: scene side in pixels.
        seed: scene and training seed.
        progress: progress bars.

    Returns:
        The test metrics (``coarse``, ``refined``, ``meta``), plus ``example`` (the located query; see
        :func:`example_line`).
    """
    out = Path(out_dir)
    scene = out / "scene"
    if not (scene / "meta.json").is_file():
        generate_scene(scene, height=size, width=size, gsd=0.5, seed=seed)
    cfg = load_geo_config(geo_demo_config_path(), ["data.format=scene", f"data.root={scene}", f"seed={seed}",
                                                   *(overrides or [])])
    data = load_localisation(cfg)
    metrics = train_geo(cfg, out, overwrite=True, progress=progress, data=data)
    index = build_geo_index(scene / "optical.tif", out / "geo_model.pt", out / "index", overwrite=True, progress=progress)
    test = [q for q in data.queries if q.split == "test"]
    q = test[int(np.random.default_rng(seed).integers(len(test)))]
    sar = read_georaster(scene / "sar.tif")
    col, row = sar.map_to_pixel([q.footprint[0]], [q.footprint[3]])
    c0, r0 = int(round(float(col[0]))), int(round(float(row[0])))
    side = cfg.data.patch_size
    t = sar.transform
    write_georaster(out / "example_query.tif", sar.window(c0, r0, side, side),
                    (t.a, t.b, t.c + c0 * t.a, t.d, t.e, t.f + r0 * t.e), sar.crs)
    answer = locate(index, out / "example_query.tif", k=5, device=cfg.device)
    atomic_write_json(out / "example_locate.json", answer)
    metrics["example"] = {"query": str(out / "example_query.tif"), "true_x": q.x, "true_y": q.y,
                          "lon": answer["lon"], "lat": answer["lat"], "error_m": answer.get("check_error_m"),
                          "error_radius_m": answer["error_radius_m"]}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def example_line(example: dict[str, Any]) -> str:
    """One line about the demo's located example query (``metrics["example"]`` of :func:`run_geo_demo`)."""
    err = example.get("error_m")
    return (f"example: {example['query']} located at lon {example['lon']:.6f}, lat {example['lat']:.6f} "
            f"(error {err if err is not None else float('nan'):.1f} m, radius {example['error_radius_m']:.1f} m)")
