import pytest
import torch
from safetensors.torch import save_file

from sarbridge.core.errors import CheckpointError, ConfigError
from sarbridge.nn.backbones import ModalityAwareBackbone, load_pretrained
from sarbridge.tasks.reid.model import ReIDModel

VIT_KW = {"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 8}


def vit(**kw):
    return ModalityAwareBackbone("vit_tiny_patch16_224", (32, 16), backbone_kwargs=VIT_KW, **kw).eval()


def batch(n=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 16, generator=g), torch.tensor([0, 1] * (n // 2)), torch.randn(n, 3, generator=g)


def test_vit_shapes_and_token_count():
    m = vit()
    x, mod, size = batch()
    assert m(x, mod, size).shape == (4, 32)
    assert m.sar_patch_embed is not None and m.size_proj is not None


def test_dual_patch_embed_routes_sar_images_to_sar_branch():
    m = vit(modality_embed=False, size_token=False)
    x, _, _ = batch()
    with torch.no_grad():
        m.sar_patch_embed.proj.weight.mul_(5.0)
    opt = m(x, torch.zeros(4, dtype=torch.long))
    sar = m(x, torch.ones(4, dtype=torch.long))
    mixed = m(x, torch.tensor([0, 1, 0, 1]))
    assert not torch.allclose(opt, sar)
    assert torch.allclose(mixed[0], opt[0], atol=1e-5) and torch.allclose(mixed[1], sar[1], atol=1e-5)


def test_modality_embedding_and_size_token_change_features():
    m = vit()
    x, _, size = batch()
    a = m(x, torch.zeros(4, dtype=torch.long), size)
    with torch.no_grad():
        m.sar_patch_embed.load_state_dict(m.net.patch_embed.state_dict())  # same patch weights
    b = m(x, torch.ones(4, dtype=torch.long), size)
    assert not torch.allclose(a, b)  # only the modality embedding differs now
    c = m(x, torch.zeros(4, dtype=torch.long), size + 1.0)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="size"):
        m(x, torch.zeros(4, dtype=torch.long))


def test_cnn_dual_stem_and_size():
    m = ModalityAwareBackbone("resnet18", (32, 16), modality_embed=False).eval()
    x, mod, size = batch()
    out = m(x, mod, size)
    assert out.shape == (4, 512)
    with torch.no_grad():
        m.stem.sar.weight.mul_(3.0)
    assert not torch.allclose(m(x, torch.ones(4, dtype=torch.long), size), m(x, torch.zeros(4, dtype=torch.long), size))
    assert m.stem.sar_mask is None  # the mask does not leak past the call


def test_cnn_rejects_modality_embedding():
    with pytest.raises(ConfigError, match="ViT"):
        ModalityAwareBackbone("resnet18", (32, 16), modality_embed=True)


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_net"):
        ModalityAwareBackbone("no_such_net", (32, 16))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_pretrained_from_local_file(tmp_path, suffix):
    src = vit()
    sd = src.net.state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    dst = vit()
    counts = load_pretrained(dst, path)
    assert counts["loaded"] == len(sd)
    for k, v in sd.items():
        assert torch.equal(dst.net.state_dict()[k], v)
    assert torch.equal(dst.sar_patch_embed.proj.weight, sd["patch_embed.proj.weight"])


def test_load_pretrained_resamples_position_embedding(tmp_path):
    big = ModalityAwareBackbone("vit_tiny_patch16_224", (64, 32), backbone_kwargs=VIT_KW)
    torch.save(big.net.state_dict(), tmp_path / "w.pth")
    small = vit()
    load_pretrained(small, tmp_path / "w.pth")
    assert small.net.pos_embed.shape == (1, 1 + 4 * 2, 32)


def test_load_pretrained_from_other_architecture_is_refused(tmp_path):
    torch.save({"foo.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_pretrained(vit(), tmp_path / "other.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pretrained(vit(), tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(vit(), tmp_path / "missing.pth")


def test_reid_model_bnneck_outputs():
    model = ReIDModel(vit(), num_classes=5).train()
    x, mod, size = batch()
    out = model(x, mod, size)
    assert out["features"].shape == (4, 32) and out["logits"].shape == (4, 5)
    assert not model.bottleneck.bias.requires_grad
    model.eval()
    raw = model(x, mod, size)["features"]
    # retrieval features are the pre-neck features minus the neck's running mean (model.centre_features)
    assert model.bottleneck.running_mean.abs().sum() > 0  # the training pass above moved it
    assert torch.allclose(model.embed(x, mod, size), raw - model.bottleneck.running_mean)
    model.centre_features = False
    assert torch.allclose(model.embed(x, mod, size), raw)
