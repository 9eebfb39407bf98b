"""ONNX export: re-ID (ViT, dual patch embedding + size token) and geo (CNN, modality-specific layers)
models match PyTorch under onnxruntime on mixed optical/SAR batches of another size than the export's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sarbridge.app.cli import main
from sarbridge.app.export import EmbeddingExport, export_onnx, load_for_export
from sarbridge.core.checkpoint import save_checkpoint
from sarbridge.core.config import config_to_dict
from sarbridge.core.errors import SarbridgeError
from sarbridge.nn.backbones import DualModule
from sarbridge.tasks.geo.bundle import build_encoder, save_geo_model
from sarbridge.tasks.geo.config import GeoConfig
from sarbridge.tasks.geo.model import TINY_CNN
from sarbridge.tasks.reid.model import build_reid_model
from sarbridge.tasks.reid.task import arch_signature
from tiny_setup import tiny_config

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

torch.set_num_threads(2)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics, so that the optical and SAR copies differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.add_(0.05 * torch.randn(t.shape, generator=g))


@pytest.fixture(scope="module")
def reid_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_config(epochs=1)
    model = build_reid_model(cfg.model, cfg.data.image_size, 4)
    assert model.backbone.sar_patch_embed is not None and model.backbone.size_proj is not None
    _perturb(model, 0)
    extra = {"config": config_to_dict(cfg),
             "preprocess": cfg.data.spec().to_dict(), "num_classes": 4, "arch": arch_signature(cfg)}
    path = tmp_path_factory.mktemp("reid") / "best.pt"
    save_checkpoint({"task": "reid", "epoch": 0, "model": model.state_dict(), **extra}, path)
    return path


@pytest.fixture(scope="module")
def geo_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = GeoConfig()
    cfg.data.image_size = [32, 32]
    cfg.model.backbone = TINY_CNN["backbone"]
    cfg.model.backbone_kwargs = dict(TINY_CNN["backbone_kwargs"])
    cfg.model.embed_dim = 32
    cfg.refine.enabled = False
    encoder = build_encoder(cfg, load_pretrained=False).eval()
    assert any(isinstance(m, DualModule) for m in encoder.modules())
    _perturb(encoder, 1)
    return save_geo_model(tmp_path_factory.mktemp("geo") / "geo_model.pt", cfg, encoder, None, {"epoch": 0})


def _ort_matches_torch(path: Path, wrapper: EmbeddingExport, inputs: dict[str, torch.Tensor]) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(inputs)
    got = sess.run(["embedding"], {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        ref = wrapper(*inputs.values()).numpy()
    assert got.shape == ref.shape
    return float(abs(got - ref).max())


def test_reid_export_matches_pytorch_on_mixed_batches(reid_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "reid.onnx"
    res = export_onnx(reid_ckpt, out, batch_size=2)
    assert res["path"] == str(out) and out.is_file() and res["inputs"] == ["image", "modality", "size"]
    assert res["opset"] == 17 and res["max_abs_diff"] is not None and res["max_abs_diff"] <= 1e-4
    assert [p.name for p in out.parent.iterdir()] == ["reid.onnx"]  # no temp files left
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["task"] == "reid" and json.loads(meta["inputs"]) == res["inputs"]
    assert json.loads(meta["preprocess"])["image_size"] == [32, 16]
    wrapper, *_ = load_for_export(reid_ckpt)
    g = torch.Generator().manual_seed(5)
    inputs = {"image": torch.randn(5, 3, 32, 16, generator=g), "modality": torch.tensor([1, 0, 0, 1, 1]),
              "size": torch.rand(5, 3, generator=g)}
    assert _ort_matches_torch(out, wrapper, inputs) <= 1e-4
    # routing matters: the same images as the other modality give other embeddings
    with torch.no_grad():
        a = wrapper(inputs["image"], inputs["modality"], inputs["size"])
        b = wrapper(inputs["image"], 1 - inputs["modality"], inputs["size"])
    assert (a - b).abs().max() > 1e-3


def test_geo_export_matches_pytorch_on_mixed_batches(geo_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "geo.onnx"
    res = export_onnx(geo_ckpt, out, batch_size=4)
    assert res["inputs"] == ["image", "modality"] and res["task"] == "geo" and res["max_abs_diff"] <= 1e-4
    wrapper, *_ = load_for_export(geo_ckpt)
    # the patches are export-time only: the model is back to its own routing
    assert all("forward" not in m.__dict__ for m in wrapper.modules() if isinstance(m, DualModule))
    g = torch.Generator().manual_seed(6)
    for mods in ([0, 1, 1], [1, 1, 1], [0]):
        inputs = {"image": torch.randn(len(mods), 3, 32, 32, generator=g), "modality": torch.tensor(mods)}
        assert _ort_matches_torch(out, wrapper, inputs) <= 1e-4
    with torch.no_grad():
        e = wrapper(torch.randn(2, 3, 32, 32, generator=g), torch.tensor([0, 1]))
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)


def test_cli_exports_and_reports(geo_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", str(geo_ckpt), "--out", str(out), "--no-verify"]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.onnx"
    assert main(["export", "--model", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not found" in err and err.count("\n") == 1 and not out.exists()
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    assert main(["export", "--model", str(bogus), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a sarbridge checkpoint" in err and err.count("\n") == 1


def test_checkpoint_of_another_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pre.pt"
    save_checkpoint({"task": "pretrain", "model": {}}, path)
    with pytest.raises(SarbridgeError, match="no retrieval embedding"):
        export_onnx(path, tmp_path / "p.onnx")


def test_missing_onnx_is_a_clear_error(geo_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(SarbridgeError, match=r"^onnx is not installed; fix: pip install 'sarbridge\[onnx\]'$"):
        export_onnx(geo_ckpt, tmp_path / "g.onnx")
