"""``sarbridge analyze``: a tiny trained run -> features before/after -> analysis files, comparison, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sarbridge.app.cli import main
from sarbridge.app.report.analyze import analyze_run, analyze_runs, expand_runs
from sarbridge.core.errors import SarbridgeError
from sarbridge.core.utils import seed_everything
from sarbridge.data.splits import holdout_validation
from sarbridge.retrieval.modality_gap import METRIC_NOTES, modality_gap_report
from sarbridge.tasks.reid.dataset import make_label_map
from sarbridge.tasks.reid.evaluate import extract_features
from sarbridge.tasks.reid.run_features import initial_reid_model, reid_samples
from sarbridge.tasks.reid.task import ReIDTask, load_splits, model_from_checkpoint, train_reid
from sarbridge.tasks.run_features import subsample_indices
from tiny_setup import HOSS_SAMPLE, tiny_config

MAX = 40


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("analyze")
    data = root / "HOSS"
    shutil.copytree(HOSS_SAMPLE, data)
    run = root / "run"
    train_reid(tiny_config(data, epochs=2, extra=["seed=3"]), run, progress=False)
    return data, run


@pytest.fixture(scope="module")
def analysed(tiny_run: tuple[Path, Path]) -> dict:
    return analyze_run(tiny_run[1], method="pca", max_samples=MAX, device="cpu", progress=False)


def test_analysis_files_and_schema(tiny_run: tuple[Path, Path], analysed: dict) -> None:
    _, run = tiny_run
    on_disk = json.loads((run / "analysis.json").read_text())
    assert on_disk == json.loads(json.dumps(analysed))
    for key in ("run", "task", "split", "samples", "method", "stages", "images"):
        assert key in on_disk, key
    assert on_disk["task"] == "reid" and on_disk["split"] == "test" and on_disk["method"] == "pca"
    assert on_disk["images"] == ["modality_gap.png"]
    s = on_disk["samples"]
    assert s["optical"] >= 2 and s["sar"] >= 2 and s["optical"] + s["sar"] <= MAX + 1
    assert set(on_disk["stages"]) == {"before", "after"}
    for stage in on_disk["stages"].values():
        assert set(stage) == set(METRIC_NOTES)
        assert 0.0 <= stage["linear_probe_acc"] <= 1.0 and stage["sliced_wasserstein"] >= 0.0
    assert on_disk["init"].startswith("random initialisation (seed 3)")
    png = (run / "modality_gap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (run / "analysis.md").read_text()
    assert "| metric | before | after | change | reading |" in md and "![modality gap](modality_gap.png)" in md
    for k in METRIC_NOTES:
        assert f"| {k} |" in md


def test_before_is_the_trainers_initial_model(tiny_run: tuple[Path, Path]) -> None:
    """Rebuild the model exactly as train_reid does (seed, then ReIDTask) and compare weights."""
    _, run = tiny_run
    _, _, cfg, state = model_from_checkpoint(run / "best.pt")
    splits = load_splits(cfg.data)
    train, val = holdout_validation(splits.train, cfg.data.val_fraction, seed=cfg.seed)
    seed_everything(cfg.seed)
    task = ReIDTask(cfg, train, val, progress=False)
    rng_after_seed = torch.rand(3)
    ours, note = initial_reid_model(cfg, len(make_label_map(train)), run)
    assert "seed 3" in note
    ref = task.model.state_dict()
    got = ours.state_dict()
    assert set(ref) == set(got)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # the analysis leaves the caller's random generators as they were
    seed_everything(cfg.seed)
    ReIDTask(cfg, train, val, progress=False)
    initial_reid_model(cfg, len(make_label_map(train)), run)
    assert torch.equal(torch.rand(3), rng_after_seed)
    # ... and differs from the trained weights
    trained = state["model"]
    assert any(not torch.equal(trained[k], got[k]) for k in got if k.startswith("backbone."))


def test_stage_metrics_come_from_initial_and_trained_features(tiny_run: tuple[Path, Path], analysed: dict) -> None:
    _, run = tiny_run
    trained, spec, cfg, state = model_from_checkpoint(run / "best.pt")
    samples = reid_samples(cfg, "test")
    mods = np.array([s.modality_index for s in samples])
    keep = subsample_indices(mods, MAX, 0)
    samples = [samples[i] for i in keep]
    assert analysed["samples"] == {"optical": int((mods[keep] == 0).sum()), "sar": int((mods[keep] == 1).sum())}
    initial, _ = initial_reid_model(cfg, int(state["num_classes"]), run)
    dev = torch.device("cpu")
    for stage, model in (("before", initial), ("after", trained)):
        f = extract_features(model, samples, spec, dev, progress=False)
        sel = torch.as_tensor(mods[keep] == 0)
        expected = modality_gap_report(f[sel], f[~sel])
        assert analysed["stages"][stage] == pytest.approx(expected, rel=1e-6, abs=1e-9), stage
    assert analysed["stages"]["before"] != pytest.approx(analysed["stages"]["after"], rel=1e-3)


def test_cli_compares_runs_of_an_ablation_folder(tiny_run: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    _, run = tiny_run
    abl = tmp_path / "abl"
    seed_dir = abl / "seed0"
    seed_dir.mkdir(parents=True)
    for name in ("baseline", "cmal"):
        shutil.copytree(run, seed_dir / name)
    (seed_dir / "cdgf").mkdir()  # evaluation-only row of the MOS ablation: no checkpoint, skipped
    (abl / "ablation.json").write_text("{}")
    runs, ablation = expand_runs([abl])
    assert runs == [seed_dir / "baseline", seed_dir / "cmal"] and ablation == abl
    assert main(["analyze", str(abl), "--method", "pca", "--max-samples", "24", "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| sliced_wasserstein |" in out and "comparison:" in out
    comp = json.loads((abl / "comparison.json").read_text())
    assert [r["name"] for r in comp["runs"]] == ["baseline", "cmal"]
    assert comp["runs"][0]["stages"] == comp["runs"][1]["stages"]  # same weights, same data, same seed
    md = (abl / "comparison.md").read_text()
    assert "## Change (after - before)" in md and "| baseline |" in md and "| cmal |" in md
    for name in ("baseline", "cmal"):
        assert (seed_dir / name / "analysis.json").is_file()
    # explicit runs and --out
    names, results, paths = analyze_runs([seed_dir / "baseline", seed_dir / "cmal"], method="pca", max_samples=24,
                                         device="cpu", out=tmp_path / "cmp", progress=False)
    assert names == ["baseline", "cmal"] and paths == [tmp_path / "cmp" / "comparison.md",
                                                        tmp_path / "cmp" / "comparison.json"]


def test_cli_error_lines(tiny_run: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    data, run = tiny_run
    assert main(["analyze", str(tmp_path / "nope"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run folder") and "not found" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "holds no checkpoint (best.pt or geo_model.pt)" in capsys.readouterr().err
    assert main(["analyze", str(run), "--data", str(tmp_path / "gone"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no longer exists" in err and "--data" in err
    moved = data.with_name("HOSS_moved")
    data.rename(moved)
    try:
        assert main(["analyze", str(run), "--quiet", "--method", "pca"]) == 2
        err = capsys.readouterr().err
        assert f"data folder '{data}' recorded in run" in err and "pass --data" in err
        # --data points at the new location
        assert main(["analyze", str(run), "--quiet", "--method", "pca", "--max-samples", "16", "--data",
                     str(moved), "--out", str(tmp_path)]) == 0
        assert json.loads((run / "analysis.json").read_text())["data"] == str(moved)
    finally:
        moved.rename(data)
    with pytest.raises(SarbridgeError, match="unknown split"):
        analyze_run(run, split="dev")


def write_scene(folder: Path, size: int = 160, seed: int = 0) -> Path:
    """A small learnable optical/SAR scene (``optical.tif`` + ``sar.tif``, EPSG:32631, 0.5 m)."""
    from sarbridge.data.georaster import write_georaster

    rng = np.random.default_rng(seed)
    coarse = rng.random((3, size // 16 + 2, size // 16 + 2))
    rgb = np.stack([np.kron(c, np.ones((16, 16)))[:size, :size] for c in coarse])
    rgb = (rgb * 200 + rng.integers(0, 40, size=rgb.shape)).clip(0, 255).astype(np.uint8)
    sar = ((rgb.astype(np.float32).mean(0) / 255.0) ** 2 * rng.gamma(4.0, 0.25, size=(size, size)))
    transform = (0.5, 0.0, 500000.0, 0.0, -0.5, 5700000.0)
    folder.mkdir(parents=True, exist_ok=True)
    write_georaster(folder / "optical.tif", rgb, transform, "EPSG:32631")
    write_georaster(folder / "sar.tif", sar.astype(np.float32)[None], transform, "EPSG:32631")
    return folder


def test_geo_run_before_and_after(tmp_path: Path) -> None:
    from sarbridge.tasks.geo.config import load_geo_config
    from sarbridge.tasks.geo.run import load_localisation, train_geo
    from sarbridge.tasks.geo.run_features import initial_geo_encoder
    from sarbridge.tasks.geo.train import GeoCoarseTask, area_views

    repo = Path(__file__).resolve().parents[3]
    scene = write_scene(tmp_path / "scene")
    cfg = load_geo_config(repo / "configs" / "geo_demo.yaml", [
        f"data.root={scene}", "data.patch_size=32", "data.image_size=[32,32]", "data.queries=60",
        "data.batch_size=16", "model.embed_dim=16", "loss.wasserstein.hidden=8", "optim.epochs=1",
        "refine.enabled=false", "device=cpu", "eval.batch_size=64", "seed=2"])
    run = tmp_path / "geo_run"
    train_geo(cfg, run, progress=False)
    res = analyze_run(run, method="pca", device="cpu", progress=False)
    assert res["task"] == "geo" and res["samples"]["sar"] > 0 and res["samples"]["optical"] > 0
    assert set(json.loads((run / "analysis.json").read_text())["stages"]) == {"before", "after"}
    assert (run / "modality_gap.png").is_file() and "seed 2" in res["init"]
    assert res["stages"]["before"] != pytest.approx(res["stages"]["after"], rel=1e-3)
    # 'before' is the encoder train_geo started from
    data = load_localisation(cfg)
    train_view, _ = area_views(data)
    seed_everything(cfg.seed)
    task = GeoCoarseTask(cfg, train_view, train_view.split("train"), train_view.split("val"), progress=False)
    ours, _ = initial_geo_encoder(cfg, run)
    ref = task.model.encoder.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in ours.state_dict().items())


def test_projection_pca_tsne_and_figure(tmp_path: Path) -> None:
    from sklearn.decomposition import PCA

    from sarbridge.viz.projection import ProjectionPanel, modality_projection_figure, project_2d

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30, 6))
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    ours = project_2d(torch.tensor(feats), method="pca")
    ref = PCA(n_components=2).fit_transform(unit)
    for c in range(2):  # equal up to the sign of each component
        assert np.allclose(np.abs(ours[:, c]), np.abs(ref[:, c]), atol=1e-8)
    tsne = project_2d(feats, method="tsne", seed=1)
    assert tsne.shape == (30, 2) and np.isfinite(tsne).all()
    assert np.allclose(tsne, project_2d(feats, method="tsne", seed=1))
    tiny = project_2d(feats[:5], method="tsne")  # too few points for t-SNE: PCA
    assert np.allclose(tiny, project_2d(feats[:5], method="pca"))
    with pytest.raises(ValueError, match="unknown projection"):
        project_2d(feats, method="umap")
    mods = np.array([0, 1] * 15)
    ids = np.repeat(np.arange(15), 2)
    out = modality_projection_figure([ProjectionPanel("a", ours, mods, ids), ProjectionPanel("b", tsne, mods, ids)],
                                     tmp_path / "p.png", title="t")
    from PIL import Image

    with Image.open(out) as im:
        w, h = im.size
    assert w > h > 100  # two panels side by side
