"""Published weights by name (``timm``, ``timm:<name>.<tag>``, ``hf-hub:timm/<name>``) from a pre-filled hub cache.

No test touches the network: ``HF_HUB_OFFLINE=1`` and a temporary ``HF_HUB_CACHE`` throughout.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from sarbridge.core.errors import CheckpointError, ConfigError
from sarbridge.nn.backbones import ModalityAwareBackbone, load_pretrained
from sarbridge.nn.pretrained import (
    LARGE_BACKBONE_PARAMS,
    hub_repo_id,
    is_hub_spec,
    resolve_hub_weights,
    warn_if_random_init,
)
from sarbridge.tasks.run_features import pretrained_for_init

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}
DEFAULT_REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # timm's default tag of vit_tiny_patch16_224


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _fill(cache: Path, repo: str, sd: dict[str, torch.Tensor], rev: str = "0123abcd") -> Path:
    """Write ``sd`` the way huggingface_hub caches a download of ``repo``'s model.safetensors."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(rev)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


def _tiny_vit_weights(seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=224, **TINY)  # with its 1000-class head
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_hub_spec_parsing() -> None:
    assert is_hub_spec("timm") and is_hub_spec("timm:resnet50.tv_in1k") and is_hub_spec("hf-hub:timm/resnet50.a1_in1k")
    assert not is_hub_spec("/weights/timm.pth") and not is_hub_spec(None) and not is_hub_spec(Path("timm"))
    assert hub_repo_id("timm", "vit_tiny_patch16_224") == DEFAULT_REPO
    assert hub_repo_id("timm:vit_base_patch16_224.orig_in21k_ft_in1k", "vit_base_patch16_224") == \
        "timm/vit_base_patch16_224.orig_in21k_ft_in1k"
    assert hub_repo_id("timm:resnet50.tv_in1k", "resnet50") == "timm/resnet50.tv_in1k"
    assert hub_repo_id("hf-hub:timm/resnet50.tv_in1k", "resnet50") == "timm/resnet50.tv_in1k"
    with pytest.raises(ConfigError, match="'resnet50' weights, not 'vit_base_patch16_224'"):
        hub_repo_id("timm:resnet50.tv_in1k", "vit_base_patch16_224")
    with pytest.raises(ConfigError, match="no pretrained weights named"):
        hub_repo_id("timm:resnet50.no_such_tag", "resnet50")


@pytest.mark.parametrize("spec", ["timm", "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                                  "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"])
def test_hub_weights_load_offline_from_the_cache(hub_cache: Path, spec: str) -> None:
    sd = _tiny_vit_weights()
    path = _fill(hub_cache, DEFAULT_REPO, sd)
    assert resolve_hub_weights(spec, "vit_tiny_patch16_224") == path
    bb = ModalityAwareBackbone("vit_tiny_patch16_224", image_size=(32, 16), backbone_kwargs=TINY)
    counts = load_pretrained(bb, spec)
    own = bb.net.state_dict()
    for k, v in sd.items():
        if k == "pos_embed":  # resampled from the 14 x 14 grid to 2 x 1; the class token is kept
            assert own[k].shape == (1, 3, 32)
            assert torch.equal(own[k][:, 0], v[:, 0])
        elif k.startswith("head."):
            assert k not in own
        else:
            assert torch.equal(own[k], v), k
    sar = bb.sar_patch_embed.state_dict()
    assert torch.equal(sar["proj.weight"], sd["patch_embed.proj.weight"])
    assert torch.equal(sar["proj.bias"], sd["patch_embed.proj.bias"])
    assert counts["skipped"] == 2 and counts["missing"] == 0  # the head; nothing of the network left out


def test_missing_weights_offline_is_one_line_naming_the_download(hub_cache: Path) -> None:
    bb = ModalityAwareBackbone("vit_tiny_patch16_224", image_size=(32, 16), backbone_kwargs=TINY)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(bb, "timm")
    msg = str(err.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg
    assert f"https://huggingface.co/{DEFAULT_REPO}/resolve/main/model.safetensors" in msg
    assert str(hub_cache / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k") in msg


def test_hf_home_locates_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _fill(tmp_path / "hub", "timm/resnet18.tv_in1k", {"fc.bias": torch.zeros(3)})
    assert resolve_hub_weights("timm:resnet18.tv_in1k", "resnet18") == path


def test_random_init_warning_only_for_large_backbones() -> None:
    small = torch.nn.Linear(10, 10)
    big = torch.nn.Module()
    big.register_parameter("w", torch.nn.Parameter(torch.empty(LARGE_BACKBONE_PARAMS + 1), requires_grad=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_random_init(small, "tiny", None)
        assert not warn_if_random_init(big, "vit_base_patch16_224", "timm")
    with pytest.warns(UserWarning, match=r"'vit_base_patch16_224' \(20M parameters\) from random initialisation"):
        assert warn_if_random_init(big, "vit_base_patch16_224", None)


def test_a_hub_name_counts_as_present_for_the_initial_model(tmp_path: Path) -> None:
    """``sarbridge analyze`` rebuilds a run's start: a hub name is no missing file (no warning, no random init)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pretrained_for_init("timm:resnet50.tv_in1k", 3, tmp_path)[0] == "timm:resnet50.tv_in1k"
    with pytest.warns(UserWarning, match="are gone"):
        assert pretrained_for_init(str(tmp_path / "gone.pth"), 3, tmp_path)[0] is None
