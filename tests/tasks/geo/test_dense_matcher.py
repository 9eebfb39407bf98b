"""The learned dense matcher: its correlation against a loop, its training, and its use in the registered stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_registered_stage import textured_scene

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.data.georaster import read_georaster
from sarbridge.tasks.geo.register.dense_matcher import (
    STRIDE,
    DenseMatcher,
    MatcherSample,
    offset_scores,
    train_dense_matcher,
)
from sarbridge.tasks.geo.register.evaluation import MapRegistrar, pixels_intensity

SIDE = 32  # query side (map pixels)


def test_offset_scores_equal_a_loop_over_offsets() -> None:
    g = torch.Generator().manual_seed(0)
    q, w = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 9, 7, generator=g)
    got = offset_scores(q, w)
    assert got.shape == (2, 6, 3)
    for b in range(2):
        for r in range(6):
            for c in range(3):
                want = float((w[b, :, r : r + 4, c : c + 5] * q[b]).sum()) / 20.0
                assert float(got[b, r, c]) == pytest.approx(want, abs=1e-5)


def test_features_are_unit_vectors_on_a_4_pixel_grid_and_bad_images_get_one_line() -> None:
    m = DenseMatcher(4, 6).eval()
    f = m.features(np.random.default_rng(0).random((40, 64)).astype(np.float32), "sar")
    assert f.shape == (6, 10, 16) and torch.allclose(f.norm(dim=0), torch.ones(10, 16), atol=1e-4)
    for bad, words in ((np.zeros((2, 40, 40)), "one (H, W) image"), (np.zeros((8, 40)), "at least 16 px"),
                       (np.full((32, 32), np.nan), "NaN")):
        with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
            m.features(bad, "optical")


def _samples(scene: Path, count: int, seed: int) -> tuple[list[MatcherSample], np.ndarray]:
    sar = read_georaster(scene / "sar.tif").array[0]
    optical = pixels_intensity(read_georaster(scene / "optical.tif").array)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        r, c = (int(v) for v in rng.integers(0, sar.shape[0] - SIDE, 2))
        out.append(MatcherSample(10.0 * np.log10(sar[r : r + SIDE, c : c + SIDE] + 1e-6), r, c))
    return out, optical


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DenseMatcher, dict, Path]:
    scene = textured_scene(tmp_path_factory.mktemp("matcher") / "scene", size=160)
    samples, optical = _samples(scene, 24, seed=1)

    def read(box: tuple[int, int, int, int]) -> np.ndarray:
        return optical[box[0] : box[2], box[1] : box[3]]

    matcher, stats = train_dense_matcher(samples, read, optical.shape, steps=40, batch_size=8, lr=5e-3, channels=8,
                                         dim=8, margin=16, seed=0)
    return matcher, stats, scene


def test_training_is_seeded_and_learns_the_true_offset(trained: tuple[DenseMatcher, dict, Path]) -> None:
    matcher, stats, scene = trained
    assert not matcher.training and stats["top1"] > 50.0  # chance: 1 of 81 offsets
    held, optical = _samples(scene, 12, seed=7)  # other places than the training crops
    hits = untrained_hits = 0
    fresh = DenseMatcher(8, 8).eval()
    for s in held:
        r0, c0 = max(0, s.row - 16) // STRIDE * STRIDE, max(0, s.col - 16) // STRIDE * STRIDE
        window = optical[r0 : r0 + SIDE + 32, c0 : c0 + SIDE + 32]
        for m in (matcher, fresh):
            scores = offset_scores(m.features(s.sar, "sar")[None], m.features(window, "optical")[None])[0]
            i, j = divmod(int(scores.flatten().argmax()), scores.shape[1])
            ok = abs(r0 + STRIDE * i - s.row) < STRIDE and abs(c0 + STRIDE * j - s.col) < STRIDE
            if m is matcher:
                hits += ok
            else:
                untrained_hits += ok
    assert hits >= 6 and hits >= untrained_hits + 4, (hits, untrained_hits)  # arbitrary (unaligned) positions
    samples, _ = _samples(scene, 24, seed=1)
    again, _ = train_dense_matcher(samples, lambda b: optical[b[0] : b[2], b[1] : b[3]], optical.shape, steps=3,
                                   batch_size=4, channels=8, dim=8, margin=16, seed=0)
    twice, _ = train_dense_matcher(samples, lambda b: optical[b[0] : b[2], b[1] : b[3]], optical.shape, steps=3,
                                   batch_size=4, channels=8, dim=8, margin=16, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), twice.state_dict().values()))


def test_training_refuses_what_it_cannot_use() -> None:
    opt = np.zeros((100, 100), np.float32)
    with pytest.raises(DataError, match="no training queries"):
        train_dense_matcher([], lambda b: opt, opt.shape)
    with pytest.raises(DataError, match="too small"):
        train_dense_matcher([MatcherSample(np.zeros((20, 20), np.float32), 0, 0)], lambda b: opt, opt.shape)
    bad = np.zeros((40, 40), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(DataError, match="not finite"):
        train_dense_matcher([MatcherSample(bad, 0, 0)], lambda b: opt[b[0] : b[2], b[1] : b[3]], opt.shape, steps=2,
                            batch_size=2, channels=4, dim=4, margin=8)
    with pytest.raises(DataError, match="too small for training windows"):
        train_dense_matcher([MatcherSample(np.zeros((96, 96), np.float32), 0, 0)], lambda b: opt, (86, 86), margin=64)


@pytest.mark.parametrize("union", [True, False])
def test_learned_registration_in_the_map_finds_the_query(trained: tuple[DenseMatcher, dict, Path],
                                                         monkeypatch: pytest.MonkeyPatch, union: bool) -> None:
    import sarbridge.tasks.geo.register.evaluation as ev

    matcher, _, scene = trained
    if not union:
        monkeypatch.setattr(ev, "UNION_SEARCH_SHARE", 0.0)
    opt, sar = read_georaster(scene / "optical.tif"), read_georaster(scene / "sar.tif")
    t = opt.transform
    r, c = 70, 53
    query = sar.array[0, r : r + SIDE, c : c + SIDE]
    cells = [(64, 32), (64, 64), (64, 48), (96, 48), (48, 48)]
    footprints = [(t.c + cc * t.a, t.f + (rr + SIDE) * t.e, t.c + (cc + SIDE) * t.a, t.f + rr * t.e) for rr, cc in cells]
    registrar = MapRegistrar(scene / "optical.tif", "learned", margin=16, matcher=matcher)
    res, boxes = registrar.register_pixels(query, SIDE, SIDE, footprints)
    assert (res.row, res.col) == pytest.approx((r, c), abs=3.0)
    r0, c0, r1, c1 = boxes[res.candidate]
    assert r0 <= res.row <= r1 - SIDE and c0 <= res.col <= c1 - SIDE
    assert res.confidence >= 1.0 and len(res.scores) == len(cells)


def test_learned_method_needs_a_matcher(tmp_path: Path) -> None:
    from sarbridge.tasks.geo.config import load_geo_config

    scene = textured_scene(tmp_path / "scene", size=64)
    with pytest.raises(ConfigError, match="needs the dense matcher"):
        MapRegistrar(scene / "optical.tif", "learned")
    repo = Path(__file__).resolve().parents[3]
    with pytest.raises(ConfigError, match="matcher.enabled is false"):
        load_geo_config(repo / "configs" / "geo_demo.yaml", [f"data.root={scene}", "eval.register.method=learned",
                                                              "matcher.enabled=false"])
    with pytest.raises(ConfigError, match="matcher.steps"):
        load_geo_config(repo / "configs" / "geo_demo.yaml", [f"data.root={scene}", "matcher.steps=0"])


def test_the_stage_trains_once_a_resumed_run_loads_it_and_the_bundle_keeps_it(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import sarbridge.tasks.geo.matcher_stage as stage
    from sarbridge.tasks.geo.bundle import build_encoder, load_geo_model, save_geo_model
    from sarbridge.tasks.geo.config import load_geo_config
    from sarbridge.tasks.geo.run import load_localisation
    from sarbridge.tasks.geo.train import area_views

    scene = textured_scene(tmp_path / "scene", size=96)
    repo = Path(__file__).resolve().parents[3]
    cfg = load_geo_config(repo / "configs" / "geo_demo.yaml", [
        f"data.root={scene}", "data.patch_size=32", "data.image_size=[32,32]", "data.queries=40", "device=cpu",
        "model.embed_dim=32", "matcher.enabled=true", "matcher.steps=3", "matcher.batch_size=4", "matcher.margin=8",
        "eval.register.method=learned"])
    view, _ = area_views(load_localisation(cfg))
    train_q = view.split("train")
    run = tmp_path / "run"
    # a rank that does not write trains the same matcher and leaves no file
    other, _ = stage.train_or_load_matcher(cfg, view, train_q, run, False, torch.device("cpu"), False, write=False)
    assert other is not None and not (run / stage.MATCHER_FILE).exists()
    matcher, info = stage.train_or_load_matcher(cfg, view, train_q, run, False, torch.device("cpu"), False)
    assert all(torch.equal(a, b) for a, b in zip(matcher.state_dict().values(), other.state_dict().values()))
    assert matcher is not None and (run / stage.MATCHER_FILE).is_file()
    assert info["matcher"]["steps"] == 3 and info["matcher"]["queries"] == len(train_q)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resumed run trained the matcher again")

    monkeypatch.setattr(stage, "train_dense_matcher", boom)
    again, info2 = stage.train_or_load_matcher(cfg, view, train_q, run, True, torch.device("cpu"), False)
    assert again is not None and info2 == info
    # every rank loads the run's matcher on resume (none trains again)
    assert stage.train_or_load_matcher(cfg, view, train_q, run, True, torch.device("cpu"), False, write=False)[1] == info
    assert all(torch.equal(a, b) for a, b in zip(matcher.state_dict().values(), again.state_dict().values()))
    cfg.matcher.enabled = False
    assert stage.train_or_load_matcher(cfg, view, train_q, run, True, torch.device("cpu"), False) == (None, {})
    cfg.matcher.enabled = True

    path = save_geo_model(tmp_path / "geo_model.pt", cfg, build_encoder(cfg, load_pretrained=False), None, info, matcher)
    loaded = load_geo_model(path).matcher
    assert loaded is not None and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(matcher.state_dict().values(), loaded.state_dict().values()))
    cfg.eval.register.method = "cfog"
    plain = save_geo_model(tmp_path / "plain.pt", cfg, build_encoder(cfg, load_pretrained=False), None, {})
    assert load_geo_model(plain).matcher is None
