"""report.html: self-contained, escaped, with metrics, CMC, ranked lists, training curves and analysis."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from sarbridge.app.report.html import build_report_html, placeholder_image, write_report
from sarbridge.core.errors import SarbridgeError
from sarbridge.data.records import Sample
from sarbridge.tasks.geo.evaluate import RankedResult, metrics_of
from sarbridge.tasks.geo.patches import GeoQuery, GeoReference, LocalisationData
from sarbridge.tasks.geo.rankings import write_geo_rankings
from sarbridge.tasks.reid.evaluate import evaluate_protocols_with_rankings
from sarbridge.tasks.reid.rankings import write_reid_rankings
from sarbridge.tasks.reid.results import write_reid_results


def write_chip(path: Path, sar: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sar:
        tifffile.imwrite(path, rng.gamma(1.0, 0.05, (24, 10)).astype(np.float32))
    else:
        tifffile.imwrite(path, rng.integers(0, 256, (24, 10, 3), dtype=np.uint8), photometric="rgb")


ATTR = re.compile(r"""\b(src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def check_self_contained(page: str) -> list[Image.Image]:
    """No external resources; every <img> is a decodable data-URI PNG; returns the images."""
    for name, value in ATTR.findall(page):
        assert not re.match(r"(?i)(https?:)?//", value.strip()), (name, value[:80])
        if name.lower() == "href":
            assert value.startswith("#"), value
    assert "<link" not in page.lower() and "<script" not in page.lower() and "@import" not in page
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    assert srcs and len(srcs) == page.count("<img ")
    images = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:40]
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        im.load()
        assert im.format == "PNG", im.format  # the bytes are a PNG, as the data URI says
        images.append(im)
    return images


def reid_run(tmp_path: Path, missing: bool = False) -> tuple[Path, dict]:
    """A fake re-identification run: tiny chips, metrics/rankings from real features, a log, a config."""
    rng = np.random.default_rng(0)
    data, run = tmp_path / "chips", tmp_path / "run"
    run.mkdir(parents=True)
    query, gallery = [], []
    for pid in range(4):
        query.append(Sample(str(data / f"q{pid}_RGB.tif"), pid, "optical"))
        write_chip(Path(query[-1].path), False, seed=pid)
        for j in range(3):
            gallery.append(Sample(str(data / f"g{pid}_{j}_SAR.tif"), pid, "sar"))
            write_chip(Path(gallery[-1].path), True, seed=10 * pid + j)
    if missing:
        Path(gallery[0].path).unlink()
    bank = {s.path: torch.from_numpy(rng.normal(size=8).astype(np.float32)) for s in [*query, *gallery]}
    res, ranks = evaluate_protocols_with_rankings(bank, {"opt2sar": (query, gallery)}, max_rank=12)
    res["protocol_source"] = "derived"
    res["meta"] = {"checkpoint": "run/best.pt", "device": "cpu", "data": str(data)}
    write_reid_results(run, res)
    write_reid_rankings(run, ranks, {"opt2sar": res["opt2sar"]["cmc"]})
    log = [{"epoch": e, "lr": 0.01 / (e + 1), "loss": 3.0 - e, "ce": 2.0 - e / 2, "triplet": 1.0 - e / 3,
            "val_opt2sar_mAP": 10.0 + 5 * e} for e in range(3)]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (run / "config.yaml").write_text("name: tiny <script>alert('x')</script>\nmodel:\n  backbone: vit\n")
    return run, json.loads((run / "metrics.json").read_text())


def test_reid_report_is_self_contained_and_shows_the_metrics(tmp_path: Path) -> None:
    run, metrics = reid_run(tmp_path)
    path = write_report(run, samples=2, worst=2, seed=1)
    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    images = check_self_contained(page)
    assert len(images) == 4  # CMC, sampled, worst, training curves
    # re-identification has no near misses: no geo legend entry (green and red only)
    assert "green: match" in page and "red: wrong" in page and "overlapping neighbour" not in page
    m = metrics["opt2sar"]
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        assert f"<td>{m[key]:.1f}</td>" in page, key
    assert "Optical-&gt;SAR" in page and "sampled queries (seed 1)" in page and "worst queries" in page
    # escaping: the config's script tag is shown as text, never as markup
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "sarbridge report: tiny &lt;script&gt;" in page
    # the ranked-list picture is one row per query plus title and legend, 11 thumbnails wide
    ranked = images[1]
    assert ranked.width > 10 * 96 and ranked.height > 2 * 96
    # the worst queries really are the lowest-AP ones
    rk = json.loads((run / "rankings.json").read_text())["protocols"]["opt2sar"]["queries"]
    worst_ap = sorted(q["ap"] for q in rk)[0]
    assert f"<td>{worst_ap:.3f}</td>" in page


def test_different_seed_draws_other_queries_and_report_is_deterministic(tmp_path: Path) -> None:
    run, _ = reid_run(tmp_path)

    def rows(page: str) -> list[str]:
        return re.findall(r"q\d_RGB\.tif", page.split("sampled queries")[2].split("worst queries")[0])

    a = build_report_html(run, samples=2, worst=0, seed=0)
    b = build_report_html(run, samples=2, worst=0, seed=0)
    seeds = {tuple(rows(build_report_html(run, samples=2, worst=0, seed=s))) for s in (1, 2)} | {tuple(rows(a))}
    assert rows(a) == rows(b) and len(rows(a)) == 2
    assert len(seeds) > 1


def test_missing_image_gives_placeholder_not_crash(tmp_path: Path) -> None:
    run, _ = reid_run(tmp_path, missing=True)
    page = write_report(run, samples=4, worst=0).read_text()
    check_self_contained(page)
    assert "Missing or unreadable image files" in page and "g0_0_SAR.tif" in page
    tile = placeholder_image("/some/where/file.tif", size=64)
    assert tile.shape == (64, 64, 3) and tile.dtype == np.uint8 and (tile == 170).mean() > 0.5


def test_run_without_rankings_still_renders_tables_and_curves(tmp_path: Path) -> None:
    run, metrics = reid_run(tmp_path)
    (run / "rankings.json").unlink()
    page = write_report(run).read_text()
    images = check_self_contained(page)
    assert len(images) == 2  # CMC (from metrics.json) + training curves
    assert "Ranked lists are unavailable" in page and "re-run" in page.lower()
    assert f"<td>{metrics['opt2sar']['mAP']:.1f}</td>" in page


def test_analysis_json_is_rendered_generically(tmp_path: Path) -> None:
    run, _ = reid_run(tmp_path)
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(run / "modality_gap.png")
    (run / "analysis.json").write_text(json.dumps({
        "stages": {"before": {"gap": 1.25, "mmd": 0.5, "probe": 1.0, "shift": 0.0123},
                   "after": {"gap": 0.75, "cka": 0.9, "probe": 0.9875, "shift": -0.00001}},
        "images": ["modality_gap.png", "absent.png"], "note": "<b>bold</b>"}))
    page = write_report(run, samples=1, worst=1).read_text()
    images = check_self_contained(page)
    assert any(im.size == (30, 20) for im in images)
    section = page.split('id="analysis"')[1].split("</section>")[0]
    for text in ("before", "after", "gap", "mmd", "cka", ">1.25<", ">0.75<", "absent.png"):
        assert text in section, text
    # measures keep four significant digits (0.9875 is not 1.0, 0.0123 is not 0.0) and no "-0.0"
    assert ">0.9875<" in section and ">0.0123<" in section and ">-1e-05<" in section
    assert ">-0.0<" not in section and ">-0<" not in section
    # one row per measure, one column per stage
    assert section.index(">measure<") < section.index(">before<") < section.index(">after<") < section.index(">gap<")
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_errors_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SarbridgeError, match="not found"):
        write_report(tmp_path / "nope")
    with pytest.raises(SarbridgeError, match=r"has no metrics.json.*run sarbridge train/eval first"):
        write_report(tmp_path)
    run, _ = reid_run(tmp_path)
    with pytest.raises(SarbridgeError, match=">= 0"):
        write_report(run, samples=-1)


def geo_run(tmp_path: Path) -> tuple[Path, dict]:
    """A fake localisation run: six references on a line, three queries, coarse + refined stages."""
    run = tmp_path / "geo"
    refs = [GeoReference(i, 10.0 * i, 0.0, 2.0, 48.0, (10.0 * i - 6, -6, 10.0 * i + 6, 6), f"map.tif[{i}]",
                         (lambda v=i: np.full((16, 16, 3), 30 * v, np.uint8))) for i in range(6)]
    queries = [GeoQuery(j, 10.0 * j + 3, 0.0, 2.0, 48.0, target=j, near=tuple(n for n in (j - 1, j + 1) if 0 <= n < 6),
                        split="test", setting="arbitrary", source=f"sar.tif[{j}]",
                        load=(lambda v=j: np.random.default_rng(v).gamma(1.0, 1.0, (16, 16)).astype(np.float32)))
               for j in (1, 2, 4)]
    view = LocalisationData(refs, queries, "EPSG:32631", "line")
    coarse = np.array([[0, 1, 2, 3, 4, 5], [2, 3, 1, 0, 4, 5], [5, 3, 4, 2, 1, 0]])
    refined = np.array([[1, 0, 2, 3, 4, 5], [2, 3, 1, 0, 4, 5], [4, 3, 5, 2, 1, 0]])
    sc = np.tile(np.linspace(0.9, 0.4, 6), (3, 1))
    results = {"coarse": RankedResult(queries, coarse, sc, view.reference_xy()[coarse[:, 0]]),
               "refined": RankedResult(queries, refined, sc, view.reference_xy()[refined[:, 0]])}
    metrics = {k: metrics_of(r, view) for k, r in results.items()}
    metrics["meta"] = {"device": "cpu", "checkpoint": str(run / "geo_model.pt")}
    write_geo_rankings(run, results, view)
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "coarse").mkdir()
    (run / "coarse" / "train_log.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "lr": 0.003, "loss": 1.0 / (e + 1), "val_top1": 20.0 * e}) + "\n"
                for e in range(2)))
    (run / "config.yaml").write_text("name: geo_tiny\n")
    return run, metrics


def test_geo_report_shows_stages_neighbours_and_distances(tmp_path: Path) -> None:
    run, metrics = geo_run(tmp_path)
    page = write_report(run, samples=3, worst=2).read_text()
    images = check_self_contained(page)
    assert len(images) == 1 + 2 * 2 + 1  # CMC, (sampled, worst) x 2 stages, coarse training curves
    assert "coarse retrieval" in page and "+ graph refinement" in page and "SAR-to-map localisation" in page
    for stage in ("coarse", "refined"):
        for key in ("top1", "top5", "mAP", "mean_err_m", "succ_50m"):
            assert f"<td>{metrics[stage][key]:.1f}</td>" in page, (stage, key)
    assert "yellow: overlapping neighbour" in page and "error m" in page
    # statuses by hand (G target, Y overlapping neighbour): query 1 coarse [0 1 2 ...], refined [1 0 2 ...];
    # query 4 coarse [5 3 4 ...]
    section = page.split('id="rankings"')[1]
    coarse, refined = section.split("+ graph refinement <span")
    assert "Y G Y R R R" in coarse and "Y Y G R R R" in coarse
    assert "G Y Y R R R" in refined and "Y G Y R R R" not in refined


@pytest.mark.slow
def test_report_of_a_real_tiny_reid_run(tmp_path: Path) -> None:
    from sarbridge.tasks.reid.task import train_reid
    from tiny_setup import tiny_config

    train_reid(tiny_config(epochs=1), tmp_path, progress=False)
    page = write_report(tmp_path, samples=2, worst=2).read_text()
    check_self_contained(page)
    assert html.escape("ALL->ALL") in page and "SAR-&gt;Optical" in page
    assert json.loads((tmp_path / "rankings.json").read_text())["protocols"]["all2all"]["num_queries"] == 31


def test_ranked_list_heading_counts_queries_as_the_metrics_table(tmp_path: Path) -> None:
    """A listed query without a gallery match (AP null) is not counted as the table does not (issue 16.8)."""
    run, metrics = reid_run(tmp_path)
    rk_path = run / "rankings.json"
    rk = json.loads(rk_path.read_text())
    rk["protocols"]["opt2sar"]["queries"][0]["ap"] = None
    rk_path.write_text(json.dumps(rk))
    page = write_report(run, samples=2, worst=2, seed=1).read_text(encoding="utf-8")
    assert "(3 queries; 1 more without a gallery match, not scored)" in page
    # the metrics table shows the cosine of matching / non-matching pairs and their gap
    sim = metrics["opt2sar"]["similarity"]
    assert "<th>cos gap</th>" in page and f"<td>{sim['gap']:.3f}</td>" in page
