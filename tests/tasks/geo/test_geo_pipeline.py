"""End to end on a tiny generated scene: train both stages, evaluate, index the map, locate, CLI, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from conftest import GEO_CRS, geo_write, geo_write_scene
from expected import assert_pinned
from sarbridge.app.cli import main
from sarbridge.core.errors import SarbridgeError
from sarbridge.data.georaster import read_georaster, write_georaster
from sarbridge.tasks.geo.bundle import load_geo_model
from sarbridge.tasks.geo.config import load_geo_config
from sarbridge.tasks.geo.run import load_localisation, train_geo
from sarbridge.tasks.geo.train import area_views, in_batch_refinement

TINY = ["data.patch_size=32", "data.image_size=[32,32]", "data.queries=120", "data.batch_size=16",
        "model.embed_dim=32", "loss.wasserstein.hidden=16", "optim.epochs=2", "refine.epochs=2", "matcher.steps=4", "matcher.batch_size=4",
        "refine.hidden=16", "refine.heads=2", "device=cpu", "eval.batch_size=64"]
REPO = Path(__file__).resolve().parents[3]
# the published GNN re-ranking (adjacency form, k1/k2 = 26/7) on this seeded run, measured when it became
# what eval.rerank=gnn means (before, gnn ran the feature form with k1/k2 = 20/6: the gnn-features pin);
# re-measured on 2026-12-05 (see TRAINED)
GNN_ADJACENCY_PIN = {"top5": 19.4444, "top10": 33.3333, "top20": 63.8889, "mAP": 13.2327}
# Figures of the seeded tiny runs below, first measured with the previous layout (commit fe7c4c0) on
# this CPU and re-measured on 2026-12-05, when the progress display stopped opening an extra iterator
# of the shuffled training DataLoader (one RNG draw per epoch less: the same code now trains the same
# way on a terminal and in a log); tolerances: see expected.assert_pinned. Two epochs do not beat
# chance retrieval (36 references: top-1 2.8 %, mAP 11.6 % at random), so these guard the behaviour of
# training and evaluation; the refiner's gain in location error is real (coarse 39.9 m -> refined 35.7 m).
TRAINED = {"coarse": {"top1": 2.7778, "top5": 13.8889, "top10": 36.1111, "top20": 61.1111, "mAP": 11.5354,
                      "mean_err_m": 39.944, "succ_50m": 72.2222},
           "refined": {"top1": 2.7778, "top5": 13.8889, "top10": 36.1111, "top20": 61.1111, "mAP": 11.5354,
                       "mean_err_m": 35.6602, "succ_50m": 77.7778}}


def tiny_cfg(scene: Path, *extra: str):
    return load_geo_config(REPO / "configs" / "geo_demo.yaml", [f"data.root={scene}", *TINY, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("geo")
    scene = geo_write_scene(root / "scene")
    metrics = train_geo(tiny_cfg(scene), root / "run", progress=False)
    return scene, root / "run", metrics


def crop_query(scene: Path, out: Path, col0: int, row0: int, side: int = 32) -> Path:
    sar = read_georaster(scene / "sar.tif")
    t = sar.transform
    return write_georaster(out, sar.window(col0, row0, side, side),
                           Affine(t.a, 0, t.c + col0 * t.a, 0, t.e, t.f + row0 * t.e), sar.crs)


def test_training_writes_the_run_folder(trained: tuple[Path, Path, dict]) -> None:
    _, run, metrics = trained
    for name in ("config.yaml", "geo_model.pt", "metrics.json", "results.md", "retrieval.png",
                 "coarse/best.pt", "coarse/train_log.jsonl", "refine/best.pt"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "metrics.json").read_text())
    for stage in ("coarse", "refined"):
        m = on_disk[stage]
        for k in ("top1", "top5", "top10", "mAP", "succ_50m", "succ_100m", "mean_err_m"):
            assert isinstance(m[k], float), (stage, k)
        assert m["top1"] <= m["top5"] <= m["top10"] <= m["top20"]
        assert m["succ_50m"] <= m["succ_100m"] <= m["succ_150m"] <= m["succ_200m"]
        assert m["queries"] == 36  # 120 queries split 0.6 / 0.1 / 0.3: 36 test queries
    assert on_disk["coarse"]["queries"] == metrics["meta"]["queries"] and metrics["meta"]["references"] == 36
    assert_pinned(on_disk, TRAINED)
    assert on_disk["refined"]["mean_err_m"] < on_disk["coarse"]["mean_err_m"] - 3.0  # the refiner moves estimates closer
    assert "| coarse retrieval |" in (run / "results.md").read_text()
    log = [json.loads(line) for line in (run / "coarse" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and "wasserstein" in log[0] and "critic_wasserstein" in log[0] and "val_top1" in log[0]


def test_bundle_restores_encoder_and_refiner(trained: tuple[Path, Path, dict]) -> None:
    _, run, _ = trained
    model = load_geo_model(run / "geo_model.pt")
    assert model.refiner is not None and model.patch_size_m == pytest.approx(16.0)
    x = torch.randn(2, 3, 32, 32)
    e = model.encoder.embed(x, torch.tensor([0, 1]))
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)


def test_existing_run_is_refused_and_kept(trained: tuple[Path, Path, dict]) -> None:
    scene, run, _ = trained
    before = (run / "geo_model.pt").read_bytes()
    with pytest.raises(SarbridgeError, match="already holds a run"):
        train_geo(tiny_cfg(scene), run, progress=False)
    assert (run / "geo_model.pt").read_bytes() == before


def test_resume_of_a_finished_run_reproduces_its_metrics(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    import shutil

    scene, run, metrics = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    again = train_geo(tiny_cfg(scene), copy, resume=True, progress=False)
    assert again["coarse"] == metrics["coarse"] and again["refined"] == metrics["refined"]


def test_clip_critic_and_end_to_end_refinement_train(tmp_path: Path) -> None:
    scene = geo_write_scene(tmp_path / "scene", seed=3)
    cfg = tiny_cfg(scene, "loss.wasserstein.mode=clip", "refine.mode=end-to-end", "optim.epochs=1", "refine.epochs=1")
    metrics = train_geo(cfg, tmp_path / "run", progress=False)
    log = json.loads((tmp_path / "run" / "coarse" / "train_log.jsonl").read_text().splitlines()[0])
    assert "refine" in log and np.isfinite(log["refine"]) and "critic_gradient_penalty" not in log
    assert set(metrics) >= {"coarse", "refined"}
    # figures of this seeded run (re-measured 2026-12-05, see TRAINED)
    assert_pinned(metrics, {"coarse": {"top5": 8.3333, "top20": 50.0, "mAP": 5.1862, "mean_err_m": 49.7008},
                            "refined": {"mAP": 5.1862, "mean_err_m": 35.3861, "succ_50m": 80.5556}})


def test_in_batch_refinement_marks_the_true_candidate() -> None:
    from sarbridge.tasks.geo.refine import LocationRefiner

    torch.manual_seed(0)
    refiner = LocationRefiner(8, hidden=8, layers=1, heads=2, edge_k=2)
    e_opt = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    targets = torch.tensor([3, 1, 2, 0])
    xy = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]])
    loss = in_batch_refinement(refiner, e_opt.clone().requires_grad_(True), e_opt, targets, xy, top_k=3)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    # queries identical to their targets: every graph contains its target, so the loss uses all 4
    far = in_batch_refinement(refiner, -e_opt, e_opt, targets, xy, top_k=1)
    assert far.item() == 0.0  # the top-1 of an opposite query is never its target: nothing to learn


def test_cross_area_views_search_disjoint_references(tmp_path: Path) -> None:
    scene = geo_write_scene(tmp_path / "scene")
    data = load_localisation(tiny_cfg(scene, "data.split=cross-area"))
    train, test = area_views(data)
    assert {r.region for r in train.references} == {"train"} and {r.region for r in test.references} == {"test"}
    assert train.split("test") == [] and test.split("train") == [] and test.split("test")
    for view in (train, test):
        for q in view.queries:
            fp, ref = q.footprint, view.references[q.target].footprint
            assert fp[0] < ref[2] and ref[0] < fp[2] and fp[1] < ref[3] and ref[1] < fp[3]


def test_build_index_and_locate(trained: tuple[Path, Path, dict], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    scene, run, _ = trained
    index = tmp_path / "index"
    assert main(["index", "build", "--map", str(scene / "optical.tif"), "--model", str(run / "geo_model.pt"),
                 "--out", str(index), "--quiet", "--device", "cpu"]) == 0
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["count"] == 36 and manifest["info"]["crs"] == GEO_CRS
    query = crop_query(scene, tmp_path / "q.tif", 40, 72)
    capsys.readouterr()
    assert main(["geo", "locate", "--index", str(index), "--query", str(query), "--json", "-k", "4",
                 "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["candidates"]) == 4 and 0 < res["confidence"] <= 1
    reg = res.get("registration") or {}
    if reg.get("registered"):  # validation chose registration and it was confident: the calibrated radius
        from sarbridge.tasks.geo.bundle import load_geo_model
        from sarbridge.tasks.geo.stages import calibrated_radius

        want = calibrated_radius(load_geo_model(run / "geo_model.pt").info["stage_choice"].get("radius"), reg["confidence"])
        assert res["error_radius_m"] == pytest.approx(reg["error_radius_m"])
        assert res["error_radius_m"] == pytest.approx(max(0.5, want) if want is not None else 0.5)
    else:  # the retrieval radius: at least half a cell
        assert res["error_radius_m"] >= 8.0
    assert 2.999 < res["lon"] < 3.002 and 51.4 < res["lat"] < 51.5  # EPSG:32631 (500000, 5700000): 3°E, 51.44°N
    assert 0.0 <= res["check_error_m"] < 100.0
    assert res["search"]["kind"] == manifest["kind"]  # the search settings the answer used
    assert main(["geo", "locate", "--index", str(index), "--query", str(query), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "error radius" in text and "\nsearch: " in text
    for c in res["candidates"]:  # patch names in full, never cut from the left
        assert str(c["source"]) in text
    # rebuilding into the same folder needs --overwrite; the index is unchanged
    assert main(["index", "build", "--map", str(scene / "optical.tif"), "--model", str(run / "geo_model.pt"),
                 "--out", str(index), "--quiet"]) == 2
    assert "already holds an index" in capsys.readouterr().err


def test_locate_errors_are_one_line(trained: tuple[Path, Path, dict], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    scene, run, _ = trained
    index = tmp_path / "index"
    main(["index", "build", "--map", str(scene / "optical.tif"), "--model", str(run / "geo_model.pt"),
          "--out", str(index), "--quiet"])
    outside = geo_write(tmp_path / "far.tif", bands=1, height=32, width=32, dtype="float32", origin=(600000.0, 5800000.0))
    optical = geo_write(tmp_path / "rgb.tif", bands=3, height=32, width=32)
    other_crs = geo_write(tmp_path / "utm32.tif", bands=1, height=32, width=32, dtype="float32", crs="EPSG:32632")
    huge = crop_query(scene, tmp_path / "huge.tif", 0, 0, side=192)
    missing = tmp_path / "no_such_query.tif"
    cases = {outside: "outside the map", optical: "band", other_crs: "reproject", huge: "crop the query",
             missing: f"query '{missing}' not found"}
    for query, message in cases.items():
        capsys.readouterr()
        assert main(["geo", "locate", "--index", str(index), "--query", str(query)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1, err
    vec = index / "vectors.npy"
    vec.write_bytes(vec.read_bytes()[:-4] + b"\0\0\0\1")
    assert main(["geo", "locate", "--index", str(index), "--query", str(huge)]) == 2
    assert "damaged" in capsys.readouterr().err


def test_build_index_refuses_a_map_without_crs(trained: tuple[Path, Path, dict], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import tifffile

    _, run, _ = trained
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    assert main(["index", "build", "--map", str(plain), "--model", str(run / "geo_model.pt"),
                 "--out", str(tmp_path / "i")]) == 2
    assert "no" in capsys.readouterr().err and not (tmp_path / "i" / "manifest.json").exists()


@pytest.mark.parametrize("method", ["k-reciprocal", "gnn-features", "gnn"])
def test_evaluate_command_with_re_ranking(trained: tuple[Path, Path, dict], tmp_path: Path, method: str) -> None:
    scene, run, _ = trained
    out = tmp_path / "eval"
    # gnn-features with k1/k2 = 20/6 is what 'gnn' ran in the previous layout (shared k1/k2, feature form)
    extra = ["--set", "eval.gnn_k1=20", "--set", "eval.gnn_k2=6"] if method == "gnn-features" else []
    assert main(["geo", "evaluate", "--model", str(run / "geo_model.pt"), "--data", str(scene), "--out", str(out),
                 "--rerank", method, "--quiet", "--device", "cpu", *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"coarse", "refined", "reranked"} <= set(metrics)
    assert metrics["coarse"] == json.loads((run / "metrics.json").read_text())["coarse"]
    # re-ranked figures of this seeded run (re-measured 2026-12-05, see TRAINED); 'gnn' is the published
    # adjacency form (k1/k2 = 26/7), 'gnn-features' the bounded-memory feature form (20/6)
    pinned = {"k-reciprocal": {"top5": 13.8889, "top10": 41.6667, "top20": 61.1111, "mAP": 12.2904},
              "gnn-features": {"top5": 13.8889, "top10": 27.7778, "top20": 63.8889, "mAP": 13.9463},
              "gnn": GNN_ADJACENCY_PIN}
    assert_pinned(metrics, {"reranked": pinned[method]})


def test_evaluate_warns_when_the_data_changed_since_training(trained: tuple[Path, Path, dict], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    scene, run, _ = trained
    info = torch.load(run / "geo_model.pt", map_location="cpu", weights_only=False)["info"]
    assert info["data_fingerprint"]["files"] >= 2  # recorded by geo train
    capsys.readouterr()
    assert main(["geo", "evaluate", "--model", str(run / "geo_model.pt"), "--out", str(tmp_path / "same"),
                 "--quiet", "--device", "cpu"]) == 0
    assert "differs" not in capsys.readouterr().err
    assert "data_changed" not in json.loads((tmp_path / "same" / "metrics.json").read_text())["meta"]
    changed = tmp_path / "scene"
    shutil.copytree(scene, changed)
    (changed / "notes.txt").write_text("an extra file in the data folder")
    assert main(["geo", "evaluate", "--model", str(run / "geo_model.pt"), "--data", str(changed),
                 "--out", str(tmp_path / "changed"), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning: the data of" in err and "files:" in err and "not comparable" in err
    meta = json.loads((tmp_path / "changed" / "metrics.json").read_text())["meta"]
    assert "files:" in meta["data_changed"]


def test_bigearthnet_sanity_evaluation(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """Real Sentinel-1/2 pairs: each SAR patch searches its optical partner among all six; cells are
    1,200 m apart, so an error is either 0 (the partner) or at least one cell."""
    _, run, _ = trained
    fixture = REPO / "tests" / "fixtures" / "bigearthnet-s1s2-pairs"
    out = tmp_path / "ben"
    assert main(["geo", "evaluate", "--model", str(run / "geo_model.pt"), "--data", str(fixture),
                 "--format", "bigearthnet", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    coarse = json.loads((out / "metrics.json").read_text())["coarse"]
    assert coarse["queries"] == 6 and coarse["top5"] >= coarse["top1"] and coarse["top10"] == 100.0
    assert coarse["succ_50m"] == pytest.approx(coarse["top1"]) and coarse["succ_200m"] == pytest.approx(coarse["top1"])
    assert (out / "retrieval.png").is_file()


def test_demo_command_end_to_end_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    sets = [a for kv in TINY for a in ("--set", kv)]
    assert main(["geo", "demo", "--out", str(out), "--size", "192", "--quiet", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"coarse", "refined", "meta", "example"} <= set(metrics)
    for name in ("scene/optical.tif", "scene/sar.tif", "index/manifest.json", "example_query.tif",
                 "example_locate.json", "retrieval.png", "results.md"):
        assert (out / name).is_file(), name
    answer = json.loads((out / "example_locate.json").read_text())
    assert answer["check_error_m"] == pytest.approx(metrics["example"]["error_m"])
    # figures of this seeded demo (re-measured 2026-12-05, see TRAINED)
    assert_pinned(metrics, {"coarse": {"top1": 0.0, "top10": 38.8889, "mAP": 10.4262, "mean_err_m": 33.327},
                            "refined": {"mean_err_m": 31.8027, "succ_50m": 88.8889}})
    assert "coarse retrieval" in capsys.readouterr().out


def test_registry_evaluates_a_geo_bundle_on_its_own_data(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """TaskSpec.evaluate of the geo task: the bundle's own config and data, the run's coarse metrics again."""
    from sarbridge.tasks.registry import GEO

    _, run, _ = trained
    assert GEO.evaluate is not None
    metrics = GEO.evaluate(run / "geo_model.pt", tmp_path / "eval", "cpu", False)
    assert metrics["coarse"] == json.loads((run / "metrics.json").read_text())["coarse"]
    assert (tmp_path / "eval" / "metrics.json").is_file()
