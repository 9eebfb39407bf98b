"""SAR patch -> optical map localisation (CMPC): ``sarbridge geo synth|train|evaluate|locate|register|demo|ablate``.

Map indexes are built by ``sarbridge index build --map`` (:func:`cmd_build_index`; the old ``geo
build-index`` is a hidden, deprecated spelling).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sarbridge.app.cli.aliases import deprecated_command
from sarbridge.app.cli.common import (
    add_common,
    add_demo_folder_args,
    add_model_arg,
    add_overwrite,
    add_report_flag,
    add_rerank,
    add_run_args,
    add_top_k,
    config_overrides,
    demo_complete,
    finish_demo,
    run_config,
    write_run_report,
)


def _print_summary(metrics: dict, out: Path) -> None:
    from sarbridge.core.distributed import current_context
    from sarbridge.tasks.geo.results import localisation_table

    if not current_context().is_main:  # under torchrun only rank 0 prints the summary
        return
    print(localisation_table(metrics), end="")
    print(f"results: {out / 'metrics.json'}, {out / 'results.md'}"
          + (f", {out / 'retrieval.png'}" if (out / "retrieval.png").exists() else ""))


def cmd_synth(args: argparse.Namespace) -> int:
    from sarbridge.core.run import check_output_folder
    from sarbridge.data.synthetic.scene import generate_scene

    check_output_folder(args.out, args.overwrite, what="scene folder")
    paths = generate_scene(args.out, height=args.size, width=args.size, gsd=args.gsd, seed=args.seed, looks=args.looks)
    print(f"wrote {paths.optical}, {paths.sar} (EPSG:32631, {args.gsd} m pixels)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from sarbridge.core.distributed import current_context
    from sarbridge.tasks.geo.config import load_geo_config
    from sarbridge.tasks.geo.run import train_geo

    cfg = run_config(args, load_geo_config)
    if cfg is None:
        return 0
    metrics = train_geo(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    _print_summary(metrics, Path(args.out))
    if current_context().is_main:
        print(f"model: {Path(args.out) / 'geo_model.pt'}")
    write_run_report(args.out, args)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sarbridge.core.config import config_from_dict, config_to_dict, merge_dicts, parse_overrides
    from sarbridge.core.run import check_output_folder
    from sarbridge.tasks.geo.bundle import load_geo_model
    from sarbridge.tasks.geo.config import GeoConfig, validate_geo
    from sarbridge.tasks.geo.run import evaluate_geo

    cfg = load_geo_model(args.model).cfg
    check_output_folder(args.out, args.overwrite, what="results folder")
    cfg = config_from_dict(merge_dicts(config_to_dict(cfg), parse_overrides(config_overrides(args, format="data.format"))),
                           GeoConfig)
    validate_geo(cfg)
    metrics = evaluate_geo(args.model, cfg, args.out, device_name=args.device or "auto", split=args.split,
                           progress=not args.quiet, rerank=args.rerank)
    _print_summary(metrics, Path(args.out))
    write_run_report(args.out, args)
    return 0


def cmd_build_index(args: argparse.Namespace) -> int:
    from sarbridge.core.distributed import current_context
    from sarbridge.tasks.geo.map_index import build_map_index

    res = build_map_index(args.map, args.model, args.out, patch_size=args.patch_size, stride=args.stride,
                          device=args.device or "auto", overwrite=args.overwrite, resume=args.resume,
                          workers=args.workers, chunk_size=args.chunk_size, target_recall=args.target_recall,
                          progress=not args.quiet)
    if not current_context().is_main:  # under torchrun only rank 0 prints
        return 0
    facts = {"index": str(res.path), "cells": res.cells, "patches": res.patches, "skipped_nodata": res.skipped,
             "chunks": res.chunks, "resumed_chunks": res.resumed_chunks, "processes": res.processes,
             "workers": res.workers, "seconds": round(res.seconds, 2), "patches_per_s": round(res.patches_per_s, 1),
             "search": res.search}
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    resumed = f", {res.resumed_chunks} of {res.chunks} chunks from an earlier run" if res.resumed_chunks else ""
    print(f"indexed {res.patches} patches of {res.cells} grid cells ({res.skipped} no-data skipped{resumed}) "
          f"in {res.seconds:.1f} s: {res.patches_per_s:.1f} patches/s on {res.processes} process(es)")
    if res.search is not None:
        print(f"search settings: {json.dumps(res.search)}")
    print(f"index: {res.path}")
    return 0


def add_map_index_args(b: argparse.ArgumentParser, required: bool) -> None:
    """The options of a map index build (``sarbridge index build --map``)."""
    b.add_argument("--map", required=required,
                   help="optical GeoTIFF/COG with a CRS, a .vrt, or a folder of GeoTIFF tiles: build a map index "
                        "for 'geo locate' (then --model is a geo_model.pt)" + ("" if required else "; default: none"))
    if required:
        b.add_argument("--model", required=True, help="geo_model.pt from 'geo train'")
        b.add_argument("--out", required=True, help="index folder")
    b.add_argument("--patch-size", type=int, default=None, help="map index: grid cell in pixels (default: the model's)")
    b.add_argument("--stride", type=int, default=None, help="map index: grid step in pixels (default: the patch size)")
    b.add_argument("--overwrite", action="store_true",
                   help="start over in an OUT that holds an index or an interrupted build (default: refuse)")
    b.add_argument("--resume", action="store_true",
                   help="map index: continue the interrupted build in OUT (default: off; refused if map/model/grid "
                        "differ)")
    b.add_argument("--workers", type=int, default=None,
                   help="map index: DataLoader processes reading map windows (default: min(4, CPUs - 1))")
    b.add_argument("--chunk-size", type=int, default=4096,
                   help="map index: patches per committed chunk (default: %(default)s)")
    if required:
        b.add_argument("--target-recall", type=float, default=None, metavar="R",
                       help="tune the approximate search to recall@10 >= R on a sample of the index's own vectors "
                            "and store the settings (default: no tuning)")
        b.add_argument("--json", action="store_true", help="print the build summary as JSON (default: text)")


def cmd_locate(args: argparse.Namespace) -> int:
    from sarbridge.retrieval.index import describe_search_settings, read_search_settings
    from sarbridge.tasks.geo.locate import locate

    res = locate(args.index, args.query, k=args.top_k, device=args.device or "auto", register=args.register)
    settings = read_search_settings(args.index)
    if args.json:
        print(json.dumps({**res, "search": settings}, indent=2))
        return 0
    print(f"query: {res['query']}")
    print(f"search: {describe_search_settings(settings, k=args.top_k)}")
    print(f"position: lon {res['lon']:.6f}, lat {res['lat']:.6f}  ({res['crs']}: x {res['x']:.1f}, y {res['y']:.1f})")
    print(f"error radius: {res['error_radius_m']:.1f} m   confidence: {res['confidence']:.2f}")
    print(f"stage: {res['stage_note']}")
    reg = res.get("registration")
    if reg is not None:
        print(f"registration ({reg['method']}): {'registered' if reg['registered'] else 'not kept'} at lon "
              f"{reg['lon']:.6f}, lat {reg['lat']:.6f}; shift from the cell centre {reg['shift_m'][0]:+.1f} m east, "
              f"{reg['shift_m'][1]:+.1f} m north ({reg['shift_distance_m']:.1f} m)")
        print(f"registration confidence: {reg['confidence']:.3f} (threshold {reg['threshold']:.3f}, "
              f"{reg['threshold_source']})   error radius: {reg['error_radius_m']:.1f} m ({reg['error_radius_basis']})")
        print(f"registration: {reg['note']}")
    if "check_error_m" in res:
        print(f"distance to the query's own georeference: {res['check_error_m']:.1f} m")
    width = max([len("patch")] + [len(str(c["source"])) for c in res["candidates"]])
    key = res.get("rank_by", "score")
    label = "p(refined)" if key == "probability" else "similarity"
    print(f"rank  {'patch':<{width}}  lon         lat        {label}")
    for c in res["candidates"]:
        value = c.get(key)
        print(f"{c['rank']:>4}  {str(c['source']):<{width}}  {c['lon']:.6f}  {c['lat']:.6f}  "
              + (f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"))
    print(f"ranks follow the {label} column ({'graph refiner node probability' if key == 'probability' else 'cosine similarity of the coarse search'})")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from sarbridge.tasks.geo.register.command import register_on_map

    res = register_on_map(args.map, args.query, around=args.around, window=args.window, method=args.method,
                          margin=args.margin, threshold=args.threshold, sar_units=args.sar_units,
                          device=args.device or "auto")
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"query: {res['query']}  ({res['method']}, window {res['window']} from {res['window_source']})")
    print(f"position: lon {res['lon']:.6f}, lat {res['lat']:.6f}  ({res['crs'][:40]}: x {res['x']:.1f}, y {res['y']:.1f};"
          f" map pixel col {res['col']:.1f}, row {res['row']:.1f})")
    print(f"shift from the {res['shift_reference']}: {res['shift_px'][0]:+.1f}, {res['shift_px'][1]:+.1f} px"
          f" = {res['shift_m'][0]:+.1f} m east, {res['shift_m'][1]:+.1f} m north ({res['shift_distance_m']:.1f} m)")
    print(f"confidence: {res['confidence']:.3f} ({'above' if res['confident'] else 'below'} the threshold"
          f" {res['threshold']:.3f})   error radius: {res['error_radius_m']:.1f} m ({res['error_radius_basis']})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sarbridge.tasks.geo.demo import example_line, run_geo_demo

    if demo_complete(args.out, args):
        return 0
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"device={args.device}")
    metrics = run_geo_demo(args.out, overrides=overrides, size=args.size, seed=args.seed, progress=not args.quiet,
                           resume=args.resume, overwrite=args.overwrite)
    report = finish_demo(args.out, metrics, progress=not args.quiet)
    if not args.quiet and "example" in metrics:
        print(example_line(metrics["example"]))
    _print_summary(metrics, Path(args.out))
    if report is not None:
        print(f"report: {report}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from sarbridge.tasks.geo.ablation import run_geo_ablation
    from sarbridge.tasks.geo.config import load_geo_config

    cfg = load_geo_config(args.config, config_overrides(args))
    table = run_geo_ablation(cfg, args.out, seeds=args.seeds, progress=not args.quiet, overwrite=args.overwrite)
    print(table, end="")
    print(f"results: {Path(args.out) / 'ablation.json'}, {Path(args.out) / 'ablation.md'}")
    return 0


def _register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="generate a georeferenced optical/SAR scene pair (GeoTIFFs)")
    s.add_argument("--out", required=True, help="scene folder to write (optical.tif, sar.tif)")
    s.add_argument("--size", type=int, default=1024, help="scene side in pixels (default: %(default)s)")
    s.add_argument("--gsd", type=float, default=0.5, help="metres per pixel (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    s.add_argument("--looks", type=int, default=1, help="SAR speckle looks (default: %(default)s)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the scene in an OUT that is not empty (default: refuse)")
    add_common(s, device=False)
    s.set_defaults(func=cmd_synth)

    t = sub.add_parser("train", help="train the coarse model and the graph refiner, evaluate on test queries")
    add_run_args(t, "YAML (see configs/geo_demo.yaml, configs/cmpc_sn6.yaml)", "data root (overrides data.root)")
    add_report_flag(t)
    add_common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate geo_model.pt on a dataset (e.g. --format bigearthnet)")
    add_model_arg(e, "geo_model.pt of 'geo train'")
    e.add_argument("--data", help="data root (default: the data the model was trained on)")
    e.add_argument("--format", choices=("scene", "map", "sn6", "manifest", "bigearthnet"),
                   help="data layout (sets data.format; default: the model's)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="which queries to evaluate; val also reports the stage choice (default: %(default)s)")
    add_rerank(e)
    e.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="evaluation-time override, e.g. eval.register.top_k=10 (repeatable)")
    e.add_argument("--out", required=True, help="results folder (refused when not empty, unless --overwrite)")
    add_overwrite(e)
    add_report_flag(e)
    add_common(e)
    e.set_defaults(func=cmd_evaluate)

    # 'geo build-index' is the old name of 'sarbridge index build --map' (hidden, deprecated)
    b = sub.add_parser("build-index", description="Deprecated: use 'sarbridge index build --map MAP'.")
    add_map_index_args(b, required=True)
    add_common(b)
    b.set_defaults(func=deprecated_command("geo build-index", "index build --map", cmd_build_index))

    lo = sub.add_parser("locate", help="locate a SAR patch on an indexed map")
    lo.add_argument("--index", required=True, help="map index folder of 'sarbridge index build --map'")
    lo.add_argument("--query", required=True, help="SAR patch (GeoTIFF or image)")
    add_top_k(lo, 10, "candidates to list")
    lo.add_argument("--json", action="store_true", help="print JSON (default: text)")
    lo.add_argument("--register", action=argparse.BooleanOptionalAction, default=None,
                    help="register the query in the indexed map around its best cells (metre-level position, "
                         "shift from the cell centre, confidence, error radius); --no-register: never. Default: "
                         "what validation chose for the model (no registration for models without a choice)")
    add_common(lo)
    lo.set_defaults(func=cmd_locate)

    rg = sub.add_parser("register", help="place a SAR image in a georeferenced optical map (training-free, pixel-level)",
                        description="Register a SAR image into a georeferenced optical map with the training-free "
                                    "CFOG descriptor (or intensity NCC) and print the position of its centre, its "
                                    "shift, the confidence (peak ratio) and an error radius. The error radius is "
                                    "one map pixel (the map's GSD) when the confidence reaches the threshold, else "
                                    "half the search window's diagonal. A query without georeference is taken to "
                                    "be at the map's pixel size.")
    rg.add_argument("--map", required=True, help="optical GeoTIFF (projected CRS, e.g. UTM)")
    rg.add_argument("--query", required=True,
                    help="SAR image: GeoTIFF in the map's CRS and pixel size, or a plain image; 1 or 2 bands")
    where = rg.add_mutually_exclusive_group()
    where.add_argument("--around", metavar="LON,LAT,RADIUS_M",
                       help="search the square of half-side RADIUS_M metres around a WGS84 point (default: see --window) "
                            "(a negative longitude needs the = form: --around=-83.95,54.78,500)")
    where.add_argument("--window", metavar="COL0,ROW0,COL1,ROW1",
                       help="search these map pixels (end exclusive). Default: the query's georeferenced "
                            "footprint plus --margin, else the whole map (at most 4096 px a side)")
    rg.add_argument("--method", choices=("cfog", "ncc"), default="cfog",
                    help="cfog: oriented-gradient descriptor (default); ncc: intensity correlation baseline")
    rg.add_argument("--margin", type=int, default=32, help="pixels searched around a georeferenced query's footprint (default: %(default)s)")
    rg.add_argument("--threshold", type=float, default=None,
                    help="confidence (peak ratio) from which the match is trusted (default: the stage's, 1.05)")
    rg.add_argument("--sar-units", choices=("auto", "db", "linear"), default="auto",
                    help="auto (default): negative values mean dB, otherwise linear backscatter converted to dB")
    rg.add_argument("--json", action="store_true", help="print JSON (default: text)")
    add_common(rg)
    rg.set_defaults(func=cmd_register)

    d = sub.add_parser("demo", help="generate a scene, train, index, locate and evaluate on CPU (minutes)")
    d.add_argument("--out", default="runs/geo_demo", help="demo folder (default: %(default)s)")
    d.add_argument("--size", type=int, default=1024, help="scene side in pixels (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the scene (default: %(default)s)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of configs/geo_demo.yaml (repeatable)")
    add_demo_folder_args(d)
    add_common(d)
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("ablate", help="triplet only, + Wasserstein, + refinement, k-reciprocal instead of refinement")
    a.add_argument("--config", required=True, help="geo YAML (see configs/geo_demo.yaml)")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    a.add_argument("--data", help="data root (default: the config's data.root)")
    a.add_argument("--out", required=True, help="ablation folder: one run per row and seed, ablation.json/.md")
    a.add_argument("--seeds", type=int, default=1,
                   help="repeat over this many seeds; mean and std reported (default: %(default)s)")
    add_overwrite(a)
    add_common(a)
    a.set_defaults(func=cmd_ablate)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sarbridge geo ...``."""
    g = sub.add_parser("geo", help="locate SAR patches on a georeferenced optical map (CMPC)")
    gsub = g.add_subparsers(dest="geo_command")
    _register(gsub)
    g.set_defaults(func=lambda a: (g.print_help(), 2)[1])
