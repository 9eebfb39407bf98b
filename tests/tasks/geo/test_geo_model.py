import pytest
import timm
import torch

from sarbridge.core.errors import ConfigError
from sarbridge.nn.backbones import DualModule
from sarbridge.tasks.geo.model import RESNET_MODALITY_SPECIFIC, TINY_CNN, GeoEmbeddingNet, build_geo_model

SIZE = (64, 64)


def tiny(**kw):
    torch.manual_seed(0)
    return build_geo_model(**TINY_CNN, image_size=SIZE, embed_dim=32, **kw)


def images(n=4, seed=0):
    return torch.randn(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def plain_timm():
    return timm.create_model(TINY_CNN["backbone"], pretrained=False, num_classes=0, **TINY_CNN["backbone_kwargs"])


def test_output_shapes_and_unit_norm_embed():
    m = tiny().eval()
    assert isinstance(m, GeoEmbeddingNet) and m.dim == 32
    assert m.backbone.dual_names == list(RESNET_MODALITY_SPECIFIC)
    out = m(images(), torch.tensor([0, 1, 0, 1]))
    assert out["features"].shape == (4, m.backbone.dim) and out["embedding"].shape == (4, 32)
    e = m.embed(images(), torch.tensor([0, 1, 0, 1]))
    assert not e.requires_grad
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)


def test_optical_and_sar_branches_differ_and_route_per_sample():
    m = tiny().eval()
    with torch.no_grad():
        for p in m.backbone.net.layer1.sar.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = images()
    opt = m(x, torch.zeros(4, dtype=torch.long))["features"]
    sar = m(x, torch.ones(4, dtype=torch.long))["features"]
    mixed = m(x, torch.tensor([0, 1, 1, 0]))["features"]
    assert not torch.allclose(opt, sar, atol=1e-4)
    assert torch.allclose(mixed[[0, 3]], opt[[0, 3]], atol=1e-5)
    assert torch.allclose(mixed[[1, 2]], sar[[1, 2]], atol=1e-5)


def test_deep_layers_are_shared():
    m = tiny(projection_bn=False)
    plain = plain_timm()
    shallow = sum(p.numel() for n, p in plain.named_parameters() if n.split(".")[0] in RESNET_MODALITY_SPECIFIC)
    head = m.backbone.dim * 32 + 32  # Linear with bias (no BatchNorm)
    total = sum(p.numel() for p in m.parameters())
    assert total == sum(p.numel() for p in plain.parameters()) + shallow + head
    assert not any(isinstance(mod, DualModule) for name, mod in m.backbone.net.named_modules() if name.startswith("layer2"))


def test_gradients_reach_both_branches_in_mixed_batch():
    m = tiny().train()
    out = m(images(), torch.tensor([0, 1, 0, 1]))
    out["embedding"].pow(2).sum().backward()
    net = m.backbone.net
    for branch in (net.conv1.optical, net.conv1.sar, net.layer1.optical, net.layer1.sar, net.layer4):
        grads = [p.grad for p in branch.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_sar_batch_leaves_optical_batchnorm_statistics():
    m = tiny().train()
    bn = m.backbone.net.bn1
    opt_mean, opt_var = bn.optical.running_mean.clone(), bn.optical.running_var.clone()
    sar_mean = bn.sar.running_mean.clone()
    m(images(), torch.ones(4, dtype=torch.long))
    assert torch.equal(bn.optical.running_mean, opt_mean) and torch.equal(bn.optical.running_var, opt_var)
    assert not torch.equal(bn.sar.running_mean, sar_mean)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_pretrained_plain_timm_weights_onto_both_branches(tmp_path, suffix):
    torch.manual_seed(123)
    plain = timm.create_model(TINY_CNN["backbone"], pretrained=False, num_classes=7, **TINY_CNN["backbone_kwargs"])
    sd = plain.state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    m = tiny(pretrained=path)
    net = m.backbone.net
    for branch in (net.conv1.optical, net.conv1.sar):
        assert torch.equal(branch.weight, sd["conv1.weight"])
    for branch in (net.bn1.optical, net.bn1.sar):
        assert torch.equal(branch.running_var, sd["bn1.running_var"])
    for branch in (net.layer1.optical, net.layer1.sar):
        assert torch.equal(branch[0].conv2.weight, sd["layer1.0.conv2.weight"])
    assert torch.equal(net.layer4[0].conv1.weight, sd["layer4.0.conv1.weight"])


def test_shared_cnn_and_vit_variants():
    shared = tiny(modality_specific=None)
    assert shared.backbone.dual_names == [] and shared.backbone.sar_patch_embed is None
    single = tiny(modality_specific="conv1")
    assert single.backbone.dual_names == ["conv1"]
    vit_kw = {"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 16}
    for ms in ("auto", None):
        vit = build_geo_model("vit_tiny_patch16_224", image_size=SIZE, embed_dim=16, modality_specific=ms, backbone_kwargs=vit_kw)
        assert vit.backbone.sar_patch_embed is not None and vit.backbone.modality_embed is None
        assert vit(images(2), torch.tensor([0, 1]))["embedding"].shape == (2, 16)


@pytest.mark.parametrize(
    "kw",
    [
        {"embed_dim": 0},
        {"embed_dim": -3},
        {"dropout": 1.0},
        {"modality_specific": ["conv1", "nonexistent"]},
        {"modality_specific": ["layer1", "layer1.0"]},
        {"modality_specific": ["conv1", "conv1"]},
    ],
)
def test_config_errors(kw):
    args = {**TINY_CNN, "image_size": SIZE, "embed_dim": 32, **kw}
    with pytest.raises(ConfigError):
        build_geo_model(**args)


def test_vit_with_modality_specific_modules_is_a_config_error():
    with pytest.raises(ConfigError):
        build_geo_model("vit_tiny_patch16_224", image_size=SIZE, modality_specific=["patch_embed"],
                        backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 16})
