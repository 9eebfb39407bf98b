"""ReIDModel's retrieval features: the pre-neck feature centred by the BNNeck's running mean (issue 16.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarbridge.tasks.reid.config import ModelConfig
from sarbridge.tasks.reid.model import build_reid_model

TINY = ModelConfig(backbone="vit_tiny_patch16_224", drop_path=0.0,
                   backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 8})


def inputs(n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 16, generator=g), torch.arange(n) % 2, torch.rand(n, 3, generator=g)


def test_embed_subtracts_the_running_mean_and_can_be_switched_off():
    torch.manual_seed(0)
    model = build_reid_model(TINY, [32, 16], num_classes=3).eval()
    x, m, s = inputs()
    raw = model.backbone(x, m, s).detach()
    offset = torch.linspace(-5.0, 5.0, model.dim)
    model.bottleneck.running_mean.copy_(offset)
    assert torch.allclose(model.embed(x, m, s), raw - offset)
    model.centre_features = False
    assert torch.equal(model.embed(x, m, s), raw)


def test_training_forward_learns_the_mean_that_embed_removes():
    """A shared offset dominates raw cosines; after training-mode passes the BNNeck's running mean
    has tracked it and the centred features' cosines are those of the per-image parts."""
    torch.manual_seed(0)
    model = build_reid_model(TINY, [32, 16], num_classes=3)
    x, m, s = inputs(8)
    model.bottleneck.momentum = None  # cumulative average: exactly the mean of the batches seen
    model.train()
    with torch.no_grad():
        feats = model(x, m, s)["features"]
    model.eval()
    assert torch.allclose(model.bottleneck.running_mean, feats.mean(0), atol=1e-5)
    centred = model.embed(x, m, s)
    assert torch.allclose(centred, feats - feats.mean(0), atol=1e-5)
    assert torch.allclose(centred.mean(0), torch.zeros(model.dim), atol=1e-5)
    # centred cosines spread around 0 where raw ones all share the offset's direction
    cos = F.normalize(centred, dim=1) @ F.normalize(centred, dim=1).T
    off_diag = cos[~torch.eye(8, dtype=torch.bool)]
    assert off_diag.mean().abs() < 0.2


def test_the_config_key_switches_centring_off():
    from dataclasses import replace

    assert build_reid_model(TINY, [32, 16], num_classes=0).centre_features is True
    assert build_reid_model(replace(TINY, centre_features=False), [32, 16], num_classes=0).centre_features is False
