"""Training through the shared Trainer, checkpoints, the translation API and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sarbridge.app.cli import main
from sarbridge.core.checkpoint import load_checkpoint, save_checkpoint
from sarbridge.core.errors import CheckpointError, ConfigError, DataError
from sarbridge.core.trainer import Trainer
from sarbridge.data.pairs import split_pairs
from sarbridge.tasks.bridge.config import load_diffusion_config
from sarbridge.tasks.bridge.model import BrownianBridge, UNetConfig, build_denoiser
from sarbridge.tasks.bridge.pairs import load_pairs
from sarbridge.tasks.bridge.train import DiffusionTask, psnr_uint8
from sarbridge.tasks.bridge.translate import BridgeTranslator, input_generator, modality_from_name

DEMO = Path(__file__).resolve().parents[3] / "configs" / "bbdm_demo.yaml"
TINY = [
    "data.resolution=[16,8]", "data.val_fraction=0.25", "data.vflip=0.0",
    "model.channels=8", "model.channel_mult=[1,2]", "model.layers_per_block=1", "model.attention_resolutions=[]",
    "model.attention_head_dim=8", "model.mid_attention=false", "model.norm_num_groups=4",
    "model.resblock_updown=false",
    "train.batch_size=4", "train.steps_per_epoch=3", "optim.epochs=2", "optim.lr=0.002",
    "eval.sample_images=2", "eval.sample_steps=3", "eval.batch_size=8", "bridge.sample_steps=4", "device=cpu",
]


def _toy_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    coarse = rng.integers(0, 256, (3, 2, 3)).astype(np.uint8)
    opt = np.array(Image.fromarray(coarse).resize((8, 16), Image.BILINEAR))
    sar = (255 - opt.mean(-1)).astype(np.uint8)  # a fixed transform of the optical image
    return opt, sar


@pytest.fixture(scope="module")
def toy_pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "pairs"
    rng = np.random.default_rng(0)
    for i in range(8):
        opt, sar = _toy_pair(rng)
        for sub, arr, suffix in (("opt", opt, "RGB"), ("sar", sar, "SAR")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"{i:04d}_s01c1_{suffix}.png")
    return root


@pytest.fixture(scope="module")
def trained(toy_pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "bbdm"
    args = ["diffusion-train", "--config", str(DEMO), "--data", str(toy_pairs), "--direction", "opt2sar",
            "--out", str(out), "--quiet"]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0
    return out


def test_tiny_model_reduces_its_training_loss():
    torch.manual_seed(0)
    cfg = UNetConfig(channels=8, channel_mult=[1, 2], layers_per_block=1, attention_resolutions=[],
                     attention_head_dim=8, mid_attention=False, norm_num_groups=4, resblock_updown=False)
    model, bridge = build_denoiser(cfg, [16, 8]), BrownianBridge()
    g = torch.Generator().manual_seed(1)

    def toy(n):  # x0 = a fixed transform of y
        y = F.interpolate(torch.rand(n, 3, 4, 2, generator=g) * 2 - 1, size=(16, 8), mode="bilinear")
        return -y.mean(1, keepdim=True).expand_as(y), y

    ex0, ey = toy(48)
    et, en = torch.randint(0, 1000, (48,), generator=g), torch.randn(ex0.shape, generator=g)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(bridge.training_loss(model, ex0, ey, et, en))

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    for _ in range(30):
        x0, y = toy(8)
        loss = bridge.training_loss(model, x0, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.65 * before


def test_training_run_writes_a_self_contained_checkpoint(trained):
    for name in ("last.pt", "best.pt", "metrics.json", "config.yaml", "train_log.jsonl"):
        assert (trained / name).is_file(), name
    state = load_checkpoint(trained / "best.pt", task="diffusion")
    assert state["direction"] == "opt2sar" and state["resolution"] == [16, 8]
    assert (state["source_modality"], state["target_modality"]) == ("optical", "sar")
    assert state["arch"]["unet"]["block_out_channels"] == [8, 16] and state["arch"]["unet"]["in_channels"] == 6
    assert state["bridge"]["num_timesteps"] == 1000 and state["bridge"]["objective"] == "grad"
    assert state["bridge"]["sample_steps"] == 4 and state["preprocess"]["image_size"] == [16, 8]
    assert state["ema"] is not None and state["ema"]["num_updates"] == 6
    assert "optimizer" not in state and "optimizer" in load_checkpoint(trained / "last.pt")
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["train_steps"] == 6 and metrics["data"]["format"] == "folder"
    assert metrics["data"]["train"]["pairs"] + metrics["data"]["val"]["pairs"] == 8
    last = metrics["history"][-1]
    assert {"loss", "val_l1", "val_psnr", "val_selection"} <= set(last)


def test_resume_and_its_errors(trained, toy_pairs, capsys, tmp_path):
    base = ["diffusion-train", "--config", str(DEMO), "--data", str(toy_pairs), "--quiet"]
    tiny = [a for o in TINY for a in ("--set", o)]
    assert main(base + ["--out", str(trained), "--direction", "opt2sar"] + tiny) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main(base + ["--out", str(trained), "--direction", "sar2opt", "--resume"] + tiny) == 2
    err = capsys.readouterr().err  # a resumed run keeps its config: the other direction is refused, in one line
    assert "direction=sar2opt differs" in err and "(opt2sar)" in err and err.count("\n") == 1
    # resuming a copy for one more epoch continues the step count
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    more = ["--set", "optim.epochs=3", "--allow-change", "optim.epochs"]  # a longer run, said explicitly
    assert main(base + ["--out", str(copy), "--direction", "opt2sar", "--resume"] + tiny + more) == 0
    metrics = json.loads((copy / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["train_steps"] == 9


def test_config_errors(toy_pairs, tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_diffusion_config(DEMO, ["model.chanels=8"])
    with pytest.raises(ConfigError, match="divisible"):
        load_diffusion_config(DEMO, ["data.resolution=[30,16]"])
    assert main(["diffusion-train", "--config", str(DEMO), "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o"), "--quiet"] + [a for o in TINY for a in ("--set", o)]) == 2
    assert "not found" in capsys.readouterr().err


def test_checkpoint_round_trip_gives_identical_samples(toy_pairs, tmp_path):
    cfg = load_diffusion_config(DEMO, [f"data.root={toy_pairs}", *TINY, "optim.epochs=1"])
    pairs, _ = load_pairs(cfg.data)
    train, val = split_pairs(pairs, cfg.data.val_fraction, min_groups=1)
    torch.manual_seed(0)
    task = DiffusionTask(cfg, train, val, progress=False)
    trainer = Trainer(task, cfg.optim, tmp_path, torch.device("cpu"), seed=0, amp=False,
                      callbacks=[task.on_step], progress=False)
    trainer.fit()
    opt = np.stack([np.asarray(Image.open(p.optical)) for p in pairs[:3]])
    with task.sampling_weights() as m:
        live = BridgeTranslator(m, task.bridge, task.spec, "opt2sar", [16, 8], vars(cfg.bridge), "cpu")
        want = live.translate(opt, samples=2, steps=5, seed=3)
    loaded = BridgeTranslator.from_checkpoint(tmp_path / "last.pt", device="cpu")
    got = loaded.translate(opt, samples=2, steps=5, seed=3)
    assert got.shape == (3, 2, 16, 8, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    # per-image streams: the batch size and the chunking do not change an image's samples
    np.testing.assert_array_equal(loaded.translate(opt, samples=2, steps=5, seed=3, batch_size=1), got)
    np.testing.assert_array_equal(loaded.translate(opt[1:], samples=2, steps=5, seed=3, start_index=1), got[1:])
    assert not np.array_equal(loaded.translate(opt, samples=2, steps=5, seed=4), got)
    keyed = loaded.translate(opt, samples=2, steps=5, seed=3, keys=["a", "b", "c"])
    np.testing.assert_array_equal(loaded.translate(opt[2:], samples=2, steps=5, seed=3, keys=["c"]), keyed[2:])
    assert not np.array_equal(keyed, got)
    # generated SAR has three equal channels; raw weights differ from the EMA ones
    assert (got[..., 0] == got[..., 2]).all()
    raw = BridgeTranslator.from_checkpoint(tmp_path / "last.pt", device="cpu", use_ema=False)
    assert not np.array_equal(raw.translate(opt, samples=2, steps=5, seed=3), got)


def test_translator_inputs_and_errors(trained):
    tr = BridgeTranslator.from_checkpoint(trained / "best.pt", device="auto")
    assert tr.direction == "opt2sar" and tr.sample_steps == 4 and tr.info["ema"]
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (2, 40, 20, 3), dtype=np.uint8)  # resized to 16x8
    assert tr.translate(big, samples=3, steps=2).shape == (2, 3, 16, 8, 3)
    mixed = [big[0], (big[1], "optical"), (rng.random((30, 12)).astype(np.float32), "RGB")]
    assert tr.translate(mixed, steps=2).shape == (3, 1, 16, 8, 3)
    with pytest.raises(DataError, match="translates optical"):
        tr.translate([(rng.random((30, 12)).astype(np.float32), "sar")], steps=2)
    with pytest.raises(DataError, match="uint8"):
        tr.translate(big.astype(np.float32), steps=2)
    with pytest.raises(DataError, match="translates optical"):
        tr.translate(big, modality="SAR")
    assert modality_from_name("0001_s01c2_SAR.tif") == "sar" and modality_from_name("chip.png") is None
    assert torch.equal(torch.randn(3, generator=input_generator(0, 5)), torch.randn(3, generator=input_generator(0, 5)))


def test_translate_cli_writes_k_pngs(trained, toy_pairs, tmp_path):
    out = tmp_path / "gen"
    rc = main(["translate", "--model", str(trained / "best.pt"), "--input", str(toy_pairs / "opt"),
               "--direction", "opt2sar", "--samples", "2", "--steps", "3", "--out", str(out), "--quiet",
               "--batch-size", "3"])
    assert rc == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 16 and pngs[:2] == ["0000_s01c1_RGB_k0.png", "0000_s01c1_RGB_k1.png"]
    img = np.asarray(Image.open(out / pngs[0]))
    assert img.shape == (16, 8, 3) and img.dtype == np.uint8
    summary = json.loads((out / "translate.json").read_text())
    assert summary["inputs"] == 8 and summary["samples"] == 2 and summary["steps"] == 3
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    # same seed -> same images whatever the batch size. Batched convolutions may round differently with the
    # batch size (seen: 3 of 384 pixels off by one grey level), so allow off-by-one rounding on a few pixels;
    # another noise draw or a mixed-up sample changes most pixels by far more than one level.
    out2 = tmp_path / "gen2"
    assert main(["translate", "--model", str(trained / "best.pt"), "--input", str(toy_pairs / "opt"),
                 "--samples", "2", "--steps", "3", "--out", str(out2), "--quiet", "--batch-size", "8"]) == 0
    for name in pngs:
        a = np.asarray(Image.open(out / name)).astype(np.int16)
        b = np.asarray(Image.open(out2 / name)).astype(np.int16)
        diff = np.abs(a - b)
        assert diff.max() <= 1, f"{name}: pixels differ by up to {diff.max()} grey levels between batch sizes"
        assert (diff > 0).mean() <= 0.02, f"{name}: {(diff > 0).mean():.1%} of pixels differ between batch sizes"
    # the tolerance still catches a real difference: two different samples of one input are far apart
    k0 = np.asarray(Image.open(out / pngs[0])).astype(np.int16)
    k1 = np.asarray(Image.open(out / pngs[1])).astype(np.int16)
    assert np.abs(k0 - k1).max() > 1 and (np.abs(k0 - k1) > 0).mean() > 0.02


def test_translate_cli_errors(trained, toy_pairs, tmp_path, capsys):
    ckpt = str(trained / "best.pt")
    common = ["--samples", "1", "--steps", "2", "--quiet"]

    def run(*args):
        rc = main(["translate", "--model", *args, *common])
        return rc, capsys.readouterr().err.strip()

    rc, err = run(ckpt, "--input", str(toy_pairs / "opt"), "--direction", "sar2opt", "--out", str(tmp_path / "a"))
    assert rc == 2 and err.startswith("error: ") and "translates opt2sar, not sar2opt" in err and "\n" not in err
    rc, err = run(ckpt, "--input", str(toy_pairs / "sar"), "--out", str(tmp_path / "b"))
    assert rc == 2 and "are not optical images" in err and "0000_s01c1_SAR.png" in err
    rc, err = run(ckpt, "--input", str(toy_pairs / "sar" / "0001_s01c1_SAR.png"), "--out", str(tmp_path / "b"))
    assert rc == 2 and "are not optical images" in err
    rc, err = run(ckpt, "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "c"))
    assert rc == 2 and "not found" in err
    rc, err = run(str(tmp_path / "nope.pt"), "--input", str(toy_pairs / "opt"), "--out", str(tmp_path / "d"))
    assert rc == 2 and "checkpoint" in err and "not found" in err
    # mixed folder: --skip-mismatched keeps the optical files only
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sub in ("opt", "sar"):
        for p in sorted((toy_pairs / sub).iterdir())[:2]:
            (mixed / p.name).write_bytes(p.read_bytes())
    rc, err = run(ckpt, "--input", str(mixed), "--out", str(tmp_path / "e"))
    assert rc == 2 and "2 of 4 inputs" in err
    assert main(["translate", "--model", ckpt, "--input", str(mixed), "--out", str(tmp_path / "e"),
                 "--skip-mismatched", *common]) == 0
    assert len(list((tmp_path / "e").glob("*.png"))) == 2
    # a checkpoint of another task
    other = tmp_path / "reid.pt"
    save_checkpoint({"task": "reid", "model": {}}, other)
    with pytest.raises(CheckpointError, match="not 'diffusion'"):
        BridgeTranslator.from_checkpoint(other)


def test_psnr_helper():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr_uint8(a, a) == 100.0
    assert psnr_uint8(a, a + 255) == pytest.approx(0.0)


def test_ema_average_swap_and_state():
    from torch import nn

    from sarbridge.tasks.bridge.train import EMA

    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    ema = EMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), 0.9 * 1 + 0.1 * 3))
    with ema.applied(model):
        torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), 1.2))
    torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), 3.0))  # restored
    state = ema.state_dict()
    other = EMA(model, decay=0.9)
    other.load_state_dict(state)
    assert other.num_updates == 1 and torch.equal(other.shadow["weight"], ema.shadow["weight"])
    ema.reset(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), 3.0))
    assert EMA(model, decay=0.995).current_decay() == pytest.approx(0.1)  # warm-up: (1 + 0) / (10 + 0)
