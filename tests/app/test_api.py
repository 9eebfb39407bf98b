"""The Python API: embed paths/PIL/arrays/tensors with a modality, rank a gallery; README example runs."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sarbridge.api
from sarbridge.app.api import Embedder, load_embedder, load_model, rank
from sarbridge.core.checkpoint import save_checkpoint
from sarbridge.core.config import config_to_dict
from sarbridge.core.errors import CheckpointError, DataError
from sarbridge.data.io import read_image
from sarbridge.tasks.reid.task import train_reid
from tiny_setup import HOSS_SAMPLE, tiny_config

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_reid(tiny_config(epochs=1), out, progress=False, evaluate_test=False)
    return out / "best.pt"


def test_embed_accepts_paths_pil_arrays_tensors_identically(checkpoint):
    emb = load_embedder(checkpoint, device="cpu")
    opt = sorted((HOSS_SAMPLE / "query").glob("*_RGB.tif"))[0]
    sar = sorted((HOSS_SAMPLE / "query").glob("*_SAR.tif"))[0]
    arr = read_image(opt)
    by_path = emb.embed([opt], modality="optical")
    by_str = emb.embed(str(opt), modality="RGB")
    by_pil = emb.embed(Image.fromarray(arr), modality="optical")
    by_arr = emb.embed(arr, modality="optical")
    by_tensor = emb.embed(torch.from_numpy(arr).permute(2, 0, 1), modality="optical")
    for other in (by_str, by_pil, by_arr, by_tensor):
        assert torch.allclose(by_path, other, atol=1e-6)
    assert by_path.shape == (1, emb.model.dim)
    assert torch.allclose(by_path.norm(dim=1), torch.ones(1))
    both = emb.embed([opt, sar], modality=["optical", "sar"])
    assert torch.allclose(both[0], by_path[0], atol=1e-6)
    assert not torch.allclose(emb.embed(sar, "sar"), emb.embed(sar, "optical"))  # modality matters


def test_embed_bad_input(checkpoint):
    emb = load_embedder(checkpoint, device="cpu")
    with pytest.raises(DataError, match="unknown modality"):
        emb.embed(np.zeros((20, 10), np.float32), modality="infrared")
    with pytest.raises(DataError, match="NaN"):
        emb.embed(np.full((20, 10), np.nan, np.float32), modality="sar")
    with pytest.raises(DataError, match="2 images but 3 modalities"):
        emb.embed([np.zeros((8, 8, 3), np.uint8)] * 2, modality=["sar"] * 3)


def test_rank_orders_by_distance_with_ties_by_index():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    idx, dist = rank(q, g, k=3)
    assert idx.tolist() == [[1, 2, 0]]  # items 1 and 2 coincide after normalisation: index order
    assert dist[0, 0] == pytest.approx(0.0, abs=1e-6) and dist[0, 2] == pytest.approx(2.0, abs=1e-6)


def test_readme_python_example_runs(checkpoint, tmp_path, monkeypatch):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python example"
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(checkpoint.read_bytes())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "idx" in namespace and namespace["idx"].shape[0] >= 1


def test_facade_exports_the_api() -> None:
    assert sarbridge.api.load_model is load_model and sarbridge.api.Embedder is Embedder
    assert sarbridge.api.load_embedder is load_embedder and sarbridge.api.rank is rank
    assert set(sarbridge.api.__all__) == {"Embedder", "load_embedder", "load_model", "rank"}


def test_load_model_gives_each_task_its_inference_object(checkpoint, tmp_path):
    emb = load_model(checkpoint, device="cpu")
    assert isinstance(emb, Embedder)
    img = read_image(sorted((HOSS_SAMPLE / "query").glob("*_RGB.tif"))[0])
    assert torch.equal(emb.embed(img, "optical"), load_embedder(checkpoint, device="cpu").embed(img, "optical"))

    from sarbridge.tasks.geo.bundle import GeoModel, build_encoder, save_geo_model
    from sarbridge.tasks.geo.config import GeoConfig
    from sarbridge.tasks.geo.model import TINY_CNN

    cfg = GeoConfig()
    cfg.data.image_size = [32, 32]
    cfg.model.backbone = TINY_CNN["backbone"]
    cfg.model.backbone_kwargs = dict(TINY_CNN["backbone_kwargs"])
    cfg.model.embed_dim = 16
    cfg.refine.enabled = False
    encoder = build_encoder(cfg, load_pretrained=False).eval()
    geo = load_model(save_geo_model(tmp_path / "geo_model.pt", cfg, encoder, None, {"epoch": 0}), device="cpu")
    assert isinstance(geo, GeoModel) and geo.refiner is None
    assert all(torch.equal(a, b) for a, b in zip(geo.encoder.state_dict().values(), encoder.state_dict().values()))

    from sarbridge.nn.backbones import ModalityAwareBackbone
    from sarbridge.tasks.pretrain.config import load_pretrain_config
    from sarbridge.tasks.pretrain.task import build_pretrain_model

    repo = Path(__file__).resolve().parents[2]
    pcfg = load_pretrain_config(repo / "configs" / "pretrain_demo.yaml", [
        "data.image_size=[32,16]", "model.backbone=vit_tiny_patch16_224",
        "model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2, patch_size: 8}", "device=cpu"])
    model = build_pretrain_model(pcfg)
    save_checkpoint({"task": "pretrain", "config": config_to_dict(pcfg), "preprocess": pcfg.data.spec().to_dict(),
                     "model": model.state_dict()}, tmp_path / "pre.pt")
    backbone = load_model(tmp_path / "pre.pt", device="cpu")
    assert isinstance(backbone, ModalityAwareBackbone) and not backbone.training
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), model.backbone.state_dict().values()))


def test_load_model_refuses_intermediate_and_foreign_files(tmp_path):
    save_checkpoint({"task": "geo-coarse", "model": {}}, tmp_path / "coarse.pt")
    with pytest.raises(CheckpointError, match="task 'geo-coarse', which has no loadable model"):
        load_model(tmp_path / "coarse.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a sarbridge checkpoint"):
        load_model(tmp_path / "other.pt")
