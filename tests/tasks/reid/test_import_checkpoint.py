"""``sarbridge import-checkpoint``: released TransOSS / MOS state dicts (key names and shapes of the public
TransOSS code, ``model/make_model.py`` + ``model/backbones/vit_transoss.py``) become sarbridge checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sarbridge.app.cli import main
from sarbridge.core.errors import CheckpointError
from sarbridge.data.hoss import load_hoss
from sarbridge.tasks.reid.config import load_reid_config
from sarbridge.tasks.reid.import_checkpoint import IMAGENET_MEAN, import_released_checkpoint
from sarbridge.tasks.reid.task import ReIDTask, model_from_checkpoint

TINY_SET = ["model.backbone=vit_tiny_patch16_224", "model.backbone_kwargs={depth: 2, embed_dim: 32, num_heads: 2}",
            "data.image_size=[32,16]"]


def released_state(dim: int, depth: int, tokens: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the names and shapes ``build_transformer(...).state_dict()`` of TransOSS has
    (MIE with 2 cameras, SSE size token, softmax classifier, BNNeck, unused ImageNet ``fc``, ``logit_scale``)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    sd = {"base.cls_token": r(1, 1, dim), "base.pos_embed": r(1, tokens + 1, dim), "base.mie_embed": r(2, 1, dim),
          "base.patch_embed.proj.weight": r(dim, 3, 16, 16), "base.patch_embed.proj.bias": r(dim),
          "base.patch_embed_SAR.proj.weight": r(dim, 3, 16, 16), "base.patch_embed_SAR.proj.bias": r(dim)}
    for i in range(depth):
        b = f"base.blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
                   b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
                   b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
                   b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
                   b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
                   b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim)})
    sd.update({"base.norm.weight": 1 + r(dim), "base.norm.bias": r(dim),
               "base.fc.weight": r(1000, dim), "base.fc.bias": r(1000),
               "base.wh_embed.linear_layer.weight": r(dim, 3), "base.wh_embed.linear_layer.bias": r(dim),
               "bottleneck.weight": 1 + r(dim), "bottleneck.bias": torch.zeros(dim),
               "bottleneck.running_mean": r(dim), "bottleneck.running_var": 1 + r(dim).abs(),
               "bottleneck.num_batches_tracked": torch.tensor(7),
               "classifier.weight": r(num_classes, dim), "logit_scale": torch.tensor(2.6592)})
    return sd


EXPECTED_NAME = {  # released prefix -> sarbridge prefix, as documented in the module
    "base.patch_embed_SAR.": "backbone.sar_patch_embed.", "base.wh_embed.linear_layer.": "backbone.size_proj.",
    "base.": "backbone.net.", "bottleneck.": "bottleneck.", "classifier.": "classifier.",
}


def _sarbridge_key(k: str) -> str:
    for old, new in EXPECTED_NAME.items():
        if k.startswith(old):
            return new + k[len(old):]
    raise AssertionError(k)


def _check_every_tensor_landed(released: dict[str, torch.Tensor], ckpt: Path) -> torch.nn.Module:
    model, spec, cfg, state = model_from_checkpoint(ckpt)
    own = model.state_dict()
    landed = 0
    for k, v in released.items():
        if k in ("base.fc.weight", "base.fc.bias", "logit_scale"):
            continue
        if k == "base.mie_embed":
            assert torch.equal(own["backbone.modality_embed"], v[:, 0]), k
        else:
            assert torch.equal(own[_sarbridge_key(k)], v), k
        landed += 1
    assert landed == len(own)  # and nothing of the model was left at its initial value
    assert state["num_classes"] == released["classifier.weight"].shape[0]
    assert state["imported_from"]["dropped"] == ["base.fc.weight", "base.fc.bias", "logit_scale"]
    assert spec.mean == IMAGENET_MEAN
    return model


@pytest.mark.slow  # a full ViT-B/16 (about 12 s on two cores)
def test_vit_b_release_imports_every_tensor(tmp_path: Path) -> None:
    released = released_state(768, 12, 128, num_classes=5)  # 256 x 128 with 16-pixel patches
    src = tmp_path / "transformer_best.pth"
    torch.save({f"module.{k}": v for k, v in released.items()}, src)  # DataParallel prefixes are removed
    out = tmp_path / "transoss.pt"
    assert main(["import-checkpoint", str(src), "--from", "transoss", "--out", str(out)]) == 0
    _check_every_tensor_landed(released, out)
    _, spec, cfg, _ = model_from_checkpoint(out)
    assert cfg.model.backbone == "vit_base_patch16_224" and cfg.data.image_size == [256, 128]
    assert spec.sar_preprocess == "max" and cfg.model.pretrained is None


def test_tiny_release_matches_the_transoss_forward(tmp_path: Path) -> None:
    """Features of the imported model equal a hand-written TransOSS forward (size token appended at the end)."""
    released = released_state(32, 2, 2, num_classes=3, seed=1)
    src = tmp_path / "mos.pth"
    torch.save({"state_dict": released}, src)
    res = import_released_checkpoint(src, tmp_path / "mos.pt", source="mos", overrides=TINY_SET)
    assert res["num_classes"] == 3 and res["loaded"] == len(released) - 3
    model = _check_every_tensor_landed(released, tmp_path / "mos.pt")
    _, spec, cfg, _ = model_from_checkpoint(tmp_path / "mos.pt")
    assert spec.sar_preprocess == "percentile" and spec.sar_alpha == 5.0 and cfg.model.modality_embed_scale == 3.0
    torch.manual_seed(0)
    x, cam, wh = torch.randn(4, 3, 32, 16), torch.tensor([0, 1, 1, 0]), torch.randn(4, 3)
    with torch.no_grad():
        ours = model.embed(x, cam, wh)
        conv = torch.nn.functional.conv2d
        p_opt = conv(x, released["base.patch_embed.proj.weight"], released["base.patch_embed.proj.bias"], stride=16)
        p_sar = conv(x, released["base.patch_embed_SAR.proj.weight"], released["base.patch_embed_SAR.proj.bias"], stride=16)
        patches = torch.where(cam.bool().view(-1, 1, 1, 1), p_sar, p_opt).flatten(2).transpose(1, 2)
        t = torch.cat([released["base.cls_token"].expand(4, -1, -1), patches], 1)
        t = t + released["base.pos_embed"] + 3.0 * released["base.mie_embed"][cam]
        size = wh @ released["base.wh_embed.linear_layer.weight"].T + released["base.wh_embed.linear_layer.bias"]
        t = torch.cat([t, size.unsqueeze(1)], 1)
        net = model.backbone.net
        ref = net.norm(net.blocks(t))[:, 0]  # block weights checked equal to the released ones above
    assert torch.allclose(ours, ref, atol=1e-5)


def test_wrong_files_give_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timm_sd = tmp_path / "vit.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 3, 8)}, timm_sd)
    assert main(["import-checkpoint", str(timm_sd), "--from", "mos", "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a released mos re-ID checkpoint" in err and "'cls_token'" in err
    assert not (tmp_path / "x.pt").exists()
    assert main(["import-checkpoint", str(tmp_path / "nope.pth"), "--from", "transoss", "--out", "x.pt"]) == 2
    assert "not found" in capsys.readouterr().err
    released = released_state(32, 1, 2, num_classes=2)
    released["base.classifier.kernel"] = torch.zeros(2, 32)  # e.g. an ArcFace head
    with pytest.raises(CheckpointError, match="key the import does not know: 'base.classifier.kernel'"):
        torch.save(released, tmp_path / "arc.pth")
        import_released_checkpoint(tmp_path / "arc.pth", tmp_path / "arc.pt", overrides=TINY_SET)
    del released["base.classifier.kernel"]
    torch.save(released, tmp_path / "ok.pth")
    with pytest.raises(CheckpointError, match="released position embedding has 2 patches.*8"):
        import_released_checkpoint(tmp_path / "ok.pth", tmp_path / "ok.pt", overrides=[*TINY_SET, "data.image_size=[64,32]"])


def test_imported_checkpoint_evaluates(tmp_path: Path, tiny_hoss: Path) -> None:
    """``sarbridge eval`` runs on an imported checkpoint and reports the three protocols."""
    torch.save(released_state(32, 2, 2, num_classes=3, seed=2), tmp_path / "rel.pth")
    ckpt = tmp_path / "rel.pt"
    import_released_checkpoint(tmp_path / "rel.pth", ckpt, overrides=[*TINY_SET, "data.cache=false",
                                                                      "data.num_workers=0", "device=cpu"])
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(ckpt), "--data", str(tiny_hoss), "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["checkpoint"] == str(ckpt)
    assert {"all2all", "opt2sar", "sar2opt"} <= set(metrics) and metrics["opt2sar"]["queries"] == 1


def test_reid_training_from_random_init_warns(tiny_hoss: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-ID task warns before training a large backbone from scratch (threshold lowered to the tiny ViT)."""
    monkeypatch.setattr("sarbridge.nn.pretrained.LARGE_BACKBONE_PARAMS", 1000)
    cfg = load_reid_config(None, [*TINY_SET, "data.cache=false", "data.num_workers=0", "device=cpu",
                                  f"data.root={tiny_hoss}", "data.sampler.num_ids=2", "data.sampler.num_instances=2"])
    train = load_hoss(tiny_hoss).train
    with pytest.warns(UserWarning, match="'vit_tiny_patch16_224' .* from random initialisation"):
        ReIDTask(cfg, train, [], progress=False, device=torch.device("cpu"))
