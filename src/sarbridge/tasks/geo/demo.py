"""``sarbridge geo demo``: generate a georeferenced scene, train, index the map, locate a query, evaluate.

Everything runs on the CPU in a few minutes (``configs/geo_demo.yaml``: a tiny CNN on 128 px patches
of a 1024 x 1024 px scene at 0.5 m, resized to 64 px). The run folder gets the training outputs (``metrics.json``,
``results.md``, ``retrieval.png``, ``geo_model.pt``, ``rankings.json``), the scene (``scene/``), the map index
(``index/``) and an example query with its answer (``example_query.tif``, ``example_locate.json``); ``sarbridge geo
demo`` then measures the modality gap and writes ``report.html`` (:mod:`sarbridge.app.cli.geo`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import ConfigError
from sarbridge.core.run import check_output_folder, plan_resume
from sarbridge.core.utils import atomic_write_json
from sarbridge.data.georaster import read_georaster, write_georaster
from sarbridge.data.synthetic.scene import generate_scene
from sarbridge.resources import resource_path
from sarbridge.tasks.geo.config import load_geo_config
from sarbridge.tasks.geo.locate import locate
from sarbridge.tasks.geo.map_index import build_geo_index
from sarbridge.tasks.geo.run import load_localisation, train_geo


def geo_demo_config_path() -> Path:
    """The packaged CPU demo config (identical to ``configs/geo_demo.yaml``)."""
    return resource_path("geo_demo.yaml")


def _index_of(index: Path, map_path: Path) -> bool:
    """Whether ``index`` is a finished index of ``map_path`` (a demo folder that was moved keeps an
    index of the old place: it is built again)."""
    try:
        info = json.loads((index / "manifest.json").read_text(encoding="utf-8")).get("info") or {}
    except (OSError, ValueError):
        return False
    return Path(str(info.get("map", ""))).resolve() == map_path.resolve()


def run_geo_demo(out_dir: str | Path, overrides: list[str] | None = None, size: int = 1024, seed: int = 0,
                 progress: bool = True, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Generate, train, index, locate and evaluate.

    Output folder rule: a non-empty ``out_dir`` is refused unless ``resume`` (continue: a complete
    scene is kept, each training stage continues from its ``last.pt`` with the folder's
    ``config.yaml``, a trained run is not trained again, a complete index is kept) or ``overwrite``
    (start over; the scene is generated again).

    Args:
        out_dir: demo folder.
        overrides: ``key=value`` overrides of the demo config.
        size: scene side in pixels.
        seed: scene and training seed.
        progress: progress bars.
        resume: continue an interrupted demo in ``out_dir``.
        overwrite: start over in a used ``out_dir``.

    Returns:
        The test metrics (``coarse``, ``refined``, ``meta``), plus ``example`` (the located query; see
        :func:`example_line`).

    Raises:
        SarbridgeError: a used ``out_dir`` without ``resume``/``overwrite``; ``resume`` with settings
            that differ from the demo's config or scene.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other", "pass one of them")
    if not resume:
        check_output_folder(out, overwrite, what="demo folder")
    scene = out / "scene"
    if resume and (scene / "meta.json").is_file():
        had = json.loads((scene / "meta.json").read_text(encoding="utf-8"))
        optical = had.get("optical") or {}
        shape = (optical.get("height"), optical.get("width"), had.get("seed"))
        if None not in shape and shape != (size, size, seed):
            raise ConfigError(f"--resume keeps the demo's scene; --size {size} --seed {seed} differs from {scene} "
                              f"({shape[0]} px, seed {shape[2]})", "pass the demo's --size and --seed, or --overwrite")
    if overwrite or not (scene / "meta.json").is_file():
        generate_scene(scene, height=size, width=size, gsd=0.5, seed=seed)
    settings = ["data.format=scene", f"data.root={scene}", f"seed={seed}", *(overrides or [])]
    trained = resume and (out / "coarse" / "last.pt").is_file()
    if trained:
        plan = plan_resume(out, load_geo_config, settings)
        plan.announce(out, f"sarbridge geo demo --resume ({', '.join(settings)})")
        cfg = plan.cfg
    else:
        cfg = load_geo_config(geo_demo_config_path(), settings)
    data = load_localisation(cfg)
    if trained and plan.finished and (out / "geo_model.pt").is_file():
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        metrics.pop("example", None)
    else:
        metrics = train_geo(cfg, out, resume=trained, overwrite=not trained, progress=progress, data=data)
    index = out / "index"
    if not (resume and _index_of(index, scene / "optical.tif")):
        build_geo_index(scene / "optical.tif", out / "geo_model.pt", index, overwrite=True, progress=progress)
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
