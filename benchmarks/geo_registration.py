"""Benchmark metre-level SAR -> optical registration on real, georeferenced Sentinel-1/2 pairs.

Data (``--data``, default ``/work/shared/data``): ``terramind-s1s2-pairs`` (5 tiles, 224 px at 10 m,
S1 RTC VV/VH, S2 RGB and L2A) and ``bigearthnet-s1s2-pairs/examples`` (6 pairs, 120 px at 10 m,
GeoTIFF per band). Optical and SAR rasters of a pair share one georeference (checked), so a SAR
window cut at a known offset has a known place in the optical tile.

For every tile, window size (``--sizes``) and seeded random offset (``--windows`` per size), the
SAR window (VV and VH in dB) is registered into the whole optical tile by each method; the error
is the distance between the found and the true top-left corner, in metres (pixel size from the
georeference). Optical input: the mean of the 10 m bands B02, B03, B04, B08 (blue, green, red,
near infrared), the bands both sources have at 10 m; NIR adds the land/water and vegetation
boundaries that dominate SAR backscatter (``--optical gray`` uses the RGB luminance instead).

Methods: ``ncc`` (intensity NCC of the mean SAR band against the optical intensity), ``cfog``
(the default: oriented-gradient descriptors compared by ZNCC), ``cfog-ssd`` (the same
descriptors compared by SSD, as in Ye et al.) and ``cfog-c2f`` (``cfog`` searched coarse-to-fine:
all offsets at half resolution, refined at full resolution). Per tile and overall: median and 90th percentile
error, success at 1 px, 10 m and 30 m, median confidence (peak ratio).

The georeference of S1 and S2 is not perfect: each tile's constant S1 -> S2 offset is measured
independently of the methods under test, by maximising the mutual information of the whole tiles
over shifts of +-4 px in 0.25 px steps, and reported with the error medians after removing it.

``--speed``: one 128 x 128 query into three 512 x 512 windows (seeded synthetic texture), the
whole ``register`` call (descriptors + FFT matching + peak) against a direct spatial-domain SSD of
the same descriptors (``conv2d``), and the cost of a rotation/scale search.

Usage: ``python benchmarks/geo_registration.py [--seed 0] [--windows 20] [--sizes 48 64 96]
[--out runs/bench_geo_registration] [--speed] [--quick]``. Prints the tables and writes
``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift

from sarbridge.data.georaster import read_georaster
from sarbridge.tasks.geo.register import (
    CFOG_DEFAULTS,
    MapDescriptors,
    cfog,
    cfog_border,
    match_ssd_fft,
    optical_intensity,
    register,
    register_coarse_to_fine,
    sar_to_db,
)

METHODS = ("ncc", "cfog", "cfog-ssd", "cfog-c2f")
L2A_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


# --- data -----------------------------------------------------------------------------------------

def _same_grid(rasters: Sequence[Any], what: str) -> float:
    """Check that rasters share CRS, transform and size; return the pixel size in metres."""
    ref = rasters[0]
    for r in rasters[1:]:
        same = r.crs == ref.crs and tuple(r.transform)[:6] == tuple(ref.transform)[:6]
        if not same or r.array.shape[-2:] != ref.array.shape[-2:]:
            raise SystemExit(f"{what}: optical and SAR rasters are not on one grid")
    a, e = ref.transform.a, ref.transform.e
    if abs(abs(a) - abs(e)) > 1e-6:
        raise SystemExit(f"{what}: non-square pixels")
    return float(abs(a))


def _sar_db(x: np.ndarray) -> tuple[np.ndarray, str]:
    """SAR in dB: linear backscatter is converted, values already in dB (negative ones) kept."""
    return (x.astype(np.float32), "dB as stored") if np.nanmin(x) < 0 else (sar_to_db(x), "linear -> dB")


def load_terramind(root: Path, optical: str) -> list[dict]:
    tiles = []
    for s1_path in sorted((root / "terramind-s1s2-pairs" / "S1RTC").glob("*.tif")):
        s1 = read_georaster(s1_path)
        if optical == "gray":
            s2 = read_georaster(root / "terramind-s1s2-pairs" / "S2RGB" / s1_path.name)
            opt = optical_intensity(s2.array, (0.299, 0.587, 0.114))
        else:
            s2 = read_georaster(root / "terramind-s1s2-pairs" / "S2L2A" / s1_path.name)
            idx = [L2A_BANDS.index(b) for b in ("B02", "B03", "B04", "B08")]
            opt = optical_intensity(s2.array[idx].astype(np.float32))
        px = _same_grid([s1, s2], s1_path.name)
        sar, unit = _sar_db(s1.array)
        tiles.append({"dataset": "terramind", "tile": s1_path.stem, "sar": sar, "optical": opt, "px": px,
                      "sar_unit": unit})
    return tiles


def load_bigearthnet(root: Path, optical: str) -> list[dict]:
    base = root / "bigearthnet-s1s2-pairs" / "examples"
    tiles = []
    for s1_dir in sorted((base / "BigEarthNet-S1-Example").iterdir()):
        meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
        s2_dir = base / "BigEarthNet-S2-Example" / meta["corresponding_s2_patch"]
        s1 = [read_georaster(next(s1_dir.glob(f"*_{p}.tif"))) for p in ("VV", "VH")]
        bands = ("B04", "B03", "B02") if optical == "gray" else ("B02", "B03", "B04", "B08")
        s2 = [read_georaster(next(s2_dir.glob(f"*_{b}.tif"))) for b in bands]
        px = _same_grid(s1 + s2, s1_dir.name)
        sar, unit = _sar_db(np.concatenate([r.array for r in s1]))
        opt = np.concatenate([r.array for r in s2]).astype(np.float32)
        opt = optical_intensity(opt, (0.299, 0.587, 0.114) if optical == "gray" else None)
        tiles.append({"dataset": "bigearthnet", "tile": s1_dir.name, "sar": sar, "optical": opt, "px": px,
                      "sar_unit": unit})
    return tiles


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    h, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins)
    p = h / h.sum()
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())


def tile_offset(sar: np.ndarray, optical: np.ndarray, reach: float = 4.0, step: float = 0.25) -> tuple[float, float]:
    """(drow, dcol) such that SAR pixel (r, c) shows the place of optical pixel (r + drow, c + dcol), by MI."""
    s = gaussian_filter(sar.mean(axis=0), 1.5)
    m = int(np.ceil(reach)) + 2
    shifts = np.arange(-reach, reach + 1e-9, step)
    best, arg = -np.inf, (0.0, 0.0)
    for dr in shifts:
        for dc in shifts:
            o = nd_shift(optical, (-dr, -dc), order=1, mode="nearest")
            v = mutual_information(s[m:-m, m:-m], o[m:-m, m:-m])
            if v > best:
                best, arg = v, (float(dr), float(dc))
    return arg


# --- accuracy -------------------------------------------------------------------------------------

def run_method(method: str, query: np.ndarray, window: np.ndarray, params: dict) -> tuple[float, float, float]:
    if method == "ncc":
        r = register(query.mean(axis=0), window, "ncc")
    elif method == "cfog-c2f":
        r = register_coarse_to_fine(query, window, "cfog", factor=2, **params)
    else:
        r = register(query, window, "cfog", similarity="ssd" if method == "cfog-ssd" else "zncc", **params)
    return r.row, r.col, r.confidence


def summarise(err: np.ndarray, px: float, conf: np.ndarray, resid: np.ndarray) -> dict:
    return {"n": int(err.size), "median_m": float(np.median(err)), "p90_m": float(np.percentile(err, 90)),
            "succ@1px": float(np.mean(err <= px + 1e-9)), "succ@10m": float(np.mean(err <= 10.0 + 1e-9)),
            "succ@30m": float(np.mean(err <= 30.0 + 1e-9)), "median_conf": float(np.median(conf)),
            "median_resid_m": float(np.median(resid))}


def accuracy(tiles: list[dict], sizes: Sequence[int], windows: int, seed: int, methods: Sequence[str],
             params: dict) -> tuple[list[dict], list[dict]]:
    samples: list[dict] = []
    for ti, t in enumerate(tiles):
        h, w = t["optical"].shape
        for size in sizes:
            if size > min(h, w):
                continue
            rng = np.random.default_rng([seed, ti, size])
            for _ in range(windows):
                r0, c0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
                q = t["sar"][:, r0 : r0 + size, c0 : c0 + size]
                for m in methods:
                    row, col, conf = run_method(m, q, t["optical"], params)
                    dr, dc = t["offset"]
                    samples.append({"dataset": t["dataset"], "tile": t["tile"], "size": size, "method": m,
                                    "r0": r0, "c0": c0,
                                    "err": float(np.hypot(row - r0, col - c0) * t["px"]), "conf": conf,
                                    "resid": float(np.hypot(row - r0 - dr, col - c0 - dc) * t["px"]), "px": t["px"]})
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for s in samples:
        for key in ((s["dataset"], s["tile"]), (s["dataset"], "all"), ("all", "all")):
            groups.setdefault((*key, s["size"], s["method"]), []).append(s)
    for (ds, tile, size, m), ss in groups.items():
        err, conf, resid = (np.array([s[k] for s in ss]) for k in ("err", "conf", "resid"))
        rows.append({"dataset": ds, "tile": tile, "size": size, "method": m,
                     **summarise(err, ss[0]["px"], conf, resid)})
    order = {m: i for i, m in enumerate(methods)}
    rows.sort(key=lambda r: (r["dataset"] == "all", r["dataset"], r["tile"] == "all", r["tile"], r["size"],
                             order[r["method"]]))
    return rows, samples


THRESHOLDS = (1.0, 1.02, 1.05, 1.1, 1.2, 1.3)


def threshold_table(samples: list[dict], methods: Sequence[str]) -> list[dict]:
    """Per method and confidence threshold: share of windows kept, success at 30 m among kept and refused."""
    rows = []
    for m in methods:
        ss = [s for s in samples if s["method"] == m]
        conf = np.array([s["conf"] for s in ss])
        ok = np.array([s["err"] <= 30.0 for s in ss])
        for t in THRESHOLDS:
            keep = conf >= t
            rows.append({"method": m, "threshold": t, "kept": float(keep.mean()) if ss else 0.0,
                         "succ@30m_kept": float(ok[keep].mean()) if keep.any() else float("nan"),
                         "succ@30m_refused": float(ok[~keep].mean()) if (~keep).any() else float("nan")})
    return rows


# --- speed ----------------------------------------------------------------------------------------

def _timed(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> float:
    """Fastest wall-clock time of ``repeats`` calls: the least disturbed by other processes on a shared machine."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def direct_ssd(query_desc: torch.Tensor, window_desc: torch.Tensor) -> torch.Tensor:
    """Reference: SSD over all offsets in the spatial domain (conv2d), same output as match_ssd_fft."""
    h, w = query_desc.shape[-2:]
    corr = F.conv2d(window_desc, query_desc[None])[:, 0]
    ww = F.avg_pool2d(window_desc.pow(2).sum(1, keepdim=True), (h, w), stride=1)[:, 0] * (h * w)
    return (ww - 2 * corr + query_desc.pow(2).sum()).clamp_min(0)


def speed(seed: int, repeats: int, size: int = 128, window: int = 512, candidates: int = 3) -> dict:
    """Time one query of ``size`` px against ``candidates`` windows of ``window`` px (see the module doc)."""
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.standard_normal((candidates, window, window)), (0, 2, 2))
    tex = (tex / tex.std()).astype(np.float32)
    wins = [tex[i] for i in range(candidates)]
    r0, c0 = min(100, window - size), min(150, window - size)
    query = tex[0, r0 : r0 + size, c0 : c0 + size] + 0.3 * rng.standard_normal((size, size)).astype(np.float32)
    b = cfog_border()
    qd = cfog(torch.from_numpy(query)[None, None])[0, :, b:-b, b:-b]
    wd = cfog(torch.from_numpy(np.stack(wins))[:, None])[:, :, b:-b, b:-b]
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "query": size, "window": window,
                           "candidates": candidates, "loadavg_before": os.getloadavg()[0]}
    out["register_cfog_s"] = _timed(lambda: register(query, wins, "cfog"), repeats)
    out["register_cfog_ssd_s"] = _timed(lambda: register(query, wins, "cfog", similarity="ssd"), repeats)
    out["register_ncc_s"] = _timed(lambda: register(query, wins, "ncc"), repeats)
    out["register_cfog_c2f_s"] = _timed(lambda: register_coarse_to_fine(query, wins, "cfog", factor=2), repeats)
    out["descriptors_s"] = _timed(lambda: (cfog(torch.from_numpy(query)[None, None]),
                                           cfog(torch.from_numpy(np.stack(wins))[:, None])), repeats)
    out["fft_ssd_s"] = _timed(lambda: match_ssd_fft(qd, wd), repeats)
    ref = direct_ssd(qd, wd)  # also its warm-up
    out["direct_ssd_s"] = _timed(lambda: direct_ssd(qd, wd), 2, warmup=False)
    out["max_rel_diff"] = float((match_ssd_fft(qd, wd) - ref).abs().max() / ref.abs().max())
    out["direct_over_fft"] = out["direct_ssd_s"] / out["fft_ssd_s"]
    angles, scales = (-6.0, -3.0, 0.0, 3.0, 6.0), (0.95, 1.0, 1.05)
    out["rot_scale_pairs"] = len(angles) * len(scales)
    out["register_rot_scale_s"] = _timed(lambda: register(query, wins, "cfog", angles=angles, scales=scales),
                                         max(1, repeats // 5))
    md = MapDescriptors(np.concatenate(wins, axis=1))  # the three windows side by side as one "map"
    boxes = [(0, i * window, window, (i + 1) * window) for i in range(candidates)]
    out["register_precomputed_s"] = _timed(lambda: register(query, md.windows(boxes), "cfog", precomputed=True),
                                           repeats)
    r = register_coarse_to_fine(query, wins, "cfog", factor=2)
    out["found_c2f"] = [r.candidate, round(r.row, 2), round(r.col, 2)]
    r = register(query, wins, "cfog")
    out["found"], out["truth"] = [r.candidate, round(r.row, 2), round(r.col, 2)], [0, r0, c0]
    out["loadavg_after"] = os.getloadavg()[0]
    return out


# --- output ---------------------------------------------------------------------------------------

def markdown(result: dict) -> str:
    lines = [f"Seed {result['seed']}, {result['windows']} windows per tile and size, sizes {result['sizes']}; "
             f"optical: {result['optical']}; SAR: VV + VH in dB; torch {result['torch']}, {result['threads']} threads.",
             "",
             "| dataset | tile | size | method | n | median m | p90 m | succ@1px | succ@10m | succ@30m | median conf "
             "| median m, tile offset removed |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['dataset']} | {r['tile']} | {r['size']} | {r['method']} | {r['n']} | {r['median_m']:.1f} | "
                     f"{r['p90_m']:.1f} | {r['succ@1px']:.2f} | {r['succ@10m']:.2f} | {r['succ@30m']:.2f} | "
                     f"{r['median_conf']:.3f} | {r['median_resid_m']:.1f} |")
    lines += ["", "Confidence threshold (all tiles and sizes): share of windows whose registration is kept, and "
              "success at 30 m among the kept and the refused ones:", "",
              "| method | threshold | kept | succ@30m kept | succ@30m refused |", "|---|---:|---:|---:|---:|"]
    for r in result["thresholds"]:
        lines.append(f"| {r['method']} | {r['threshold']:.2f} | {r['kept']:.2f} | {r['succ@30m_kept']:.2f} | "
                     f"{r['succ@30m_refused']:.2f} |")
    lines += ["", "Constant S1 -> S2 offset of each tile (mutual information of the whole tiles, pixels):", "",
              "| dataset | tile | d row px | d col px | metres |", "|---|---|---:|---:|---:|"]
    for o in result["offsets"]:
        lines.append(f"| {o['dataset']} | {o['tile']} | {o['drow']:+.2f} | {o['dcol']:+.2f} | {o['metres']:.1f} |")
    if result.get("speed"):
        s = result["speed"]
        lines += ["", f"Speed ({s['threads']} CPU threads, one {s['query']} px query, {s['candidates']} windows of "
                  f"{s['window']} px, fastest of the repeats; load average {s['loadavg_before']:.1f} before, "
                  f"{s['loadavg_after']:.1f} after):", "", "| what | ms |", "|---|---:|"]
        for k in ("register_cfog_s", "register_cfog_ssd_s", "register_cfog_c2f_s", "register_ncc_s",
                  "register_precomputed_s",
                  "descriptors_s", "fft_ssd_s", "direct_ssd_s", "register_rot_scale_s"):
            lines.append(f"| {k[:-2]} | {1000 * s[k]:.1f} |")
        lines += ["", f"Direct spatial SSD / FFT SSD: {s['direct_over_fft']:.0f}x (max relative difference "
                  f"{s['max_rel_diff']:.1e}); rotation/scale search over {s['rot_scale_pairs']} pairs: "
                  f"{s['register_rot_scale_s'] / s['register_cfog_s']:.1f}x one registration."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    p.add_argument("--datasets", nargs="+", default=["terramind", "bigearthnet"], choices=["terramind", "bigearthnet"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--windows", type=int, default=20, help="random windows per tile and size")
    p.add_argument("--sizes", type=int, nargs="+", default=[48, 64, 96])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--optical", choices=["rgbn", "gray"], default="rgbn")
    p.add_argument("--out", type=Path, default=Path("runs/bench_geo_registration"))
    p.add_argument("--speed", action="store_true", help="also time registration against a direct SSD")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cfog", nargs="*", default=[], metavar="KEY=VALUE",
                   help="register() parameters for the cfog methods (sigma, pre_sigma, query_pre_sigma, orientations)")
    p.add_argument("--no-offsets", action="store_true", help="skip measuring each tile's S1 -> S2 offset")
    p.add_argument("--quick", action="store_true", help="2 windows, size 64, no offsets search (smoke test)")
    a = p.parse_args(argv)
    if a.windows < 1 or any(s < 2 * cfog_border() + 1 for s in a.sizes):
        p.error(f"--windows must be >= 1 and --sizes >= {2 * cfog_border() + 1}")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.quick:
        a.windows, a.sizes, a.repeats = 2, [64], 2
    tiles = []
    if "terramind" in a.datasets:
        tiles += load_terramind(a.data, a.optical)
    if "bigearthnet" in a.datasets:
        tiles += load_bigearthnet(a.data, a.optical)
    offsets = []
    for t in tiles:
        t["offset"] = (0.0, 0.0) if a.quick or a.no_offsets else tile_offset(t["sar"], t["optical"])
        offsets.append({"dataset": t["dataset"], "tile": t["tile"], "drow": t["offset"][0], "dcol": t["offset"][1],
                        "metres": float(np.hypot(*t["offset"]) * t["px"]), "sar_unit": t["sar_unit"]})
    params = {k: (int(v) if k == "orientations" else float(v)) for k, v in (kv.split("=", 1) for kv in a.cfog)}
    rows, samples = accuracy(tiles, a.sizes, a.windows, a.seed, a.methods, params)
    result = {"seed": a.seed, "windows": a.windows, "sizes": a.sizes, "methods": a.methods, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "optical": "mean of B02, B03, B04, B08" if a.optical == "rgbn" else "RGB luminance",
              "cfog": {**CFOG_DEFAULTS, **params}, "offsets": offsets, "rows": rows,
              "thresholds": threshold_table(samples, a.methods),
              "samples": samples}
    if a.speed:
        result["speed"] = speed(a.seed, a.repeats, *((48, 128) if a.quick else (128, 512)))
    md = markdown(result)
    print(md)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (a.out / "results.md").write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
