"""Trainer runtime options: precision (bf16 autocast on CPU), gradient accumulation, channels_last, compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.config import OptimConfig, RuntimeConfig
from sarbridge.core.errors import ConfigError
from sarbridge.core.trainer import Trainer, conv_fraction, resolve_precision, use_channels_last

CPU = torch.device("cpu")


class RegressionTask:
    """Linear regression over fixed batches (no batch-dependent layers: hand-checkable)."""

    name = "toy"
    train_module = None

    def __init__(self, batches: list[torch.Tensor], model: nn.Module | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 5, generator=g)
        self.y = self.x @ torch.arange(1.0, 6.0) + 0.1 * torch.randn(64, generator=g)
        torch.manual_seed(1)
        self.model = model if model is not None else nn.Linear(5, 1)
        self.batches = batches
        self.dtypes: list[torch.dtype] = []

    def train_batches(self, epoch):
        return self.batches

    def training_step(self, idx, device):
        net = self.train_module if self.train_module is not None else self.model
        pred = net(self.x[idx].to(device)).squeeze(1)
        self.dtypes.append(pred.dtype)
        return {"loss": nn.functional.mse_loss(pred.float(), self.y[idx].to(device))}

    def validate(self, epoch, device):
        return None

    def checkpoint_extra(self):
        return {}


def fit(tmp_path, batches, accumulate=1, runtime=None, grad_clip=0.0, epochs=1, model=None, **kw) -> Trainer:
    task = RegressionTask(batches, model)
    optim = OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, warmup_epochs=0, epochs=epochs,
                        grad_clip=grad_clip, accumulate=accumulate)
    tr = Trainer(task, optim, tmp_path, CPU, seed=0, progress=False, runtime=runtime, **kw)
    tr.fit()
    return tr


def chunks(n: int, size: int) -> list[torch.Tensor]:
    return [torch.arange(i, min(i + size, n)) for i in range(0, n, size)]


def params(tr: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in tr.model.parameters()]


def test_resolve_precision():
    assert resolve_precision("auto", True, CPU) is None  # fp32 on CPU, as before
    assert resolve_precision("bf16", True, CPU) is torch.bfloat16
    assert resolve_precision("fp16", True, CPU) is torch.float16
    assert resolve_precision("bf16", False, CPU) is None  # amp: false forces fp32
    assert resolve_precision("fp32", True, torch.device("cuda")) is None
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8", True, CPU)


def test_bf16_autocast_on_cpu_runs_and_is_close_to_fp32(tmp_path):
    batches = chunks(64, 16)
    ref = fit(tmp_path / "fp32", batches, runtime=RuntimeConfig(precision="fp32"), epochs=2)
    bf = fit(tmp_path / "bf16", batches, runtime=RuntimeConfig(precision="bf16"), epochs=2)
    assert bf.task.dtypes[0] == torch.bfloat16 and ref.task.dtypes[0] == torch.float32
    assert not bf.scaler.is_enabled()  # bf16 needs no loss scaling
    for a, b in zip(ref.history, bf.history):
        assert torch.isfinite(torch.tensor(b["loss"]))
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05)
    assert bf.history[-1]["loss"] < bf.history[0]["loss"]
    # parameters stay float32 (autocast only changes the compute dtype)
    assert all(p.dtype == torch.float32 for p in bf.model.parameters())


def test_fp16_uses_a_grad_scaler(tmp_path):
    tr = fit(tmp_path, chunks(64, 16), runtime=RuntimeConfig(precision="fp16"))
    assert tr.scaler.is_enabled() and tr.task.dtypes[0] == torch.float16
    assert torch.isfinite(torch.tensor(tr.history[0]["loss"]))


def test_accumulating_two_batches_equals_one_double_batch(tmp_path):
    acc = fit(tmp_path / "acc", chunks(64, 8), accumulate=2, grad_clip=0.5, epochs=2)
    big = fit(tmp_path / "big", chunks(64, 16), accumulate=1, grad_clip=0.5, epochs=2)
    for a, b in zip(params(acc), params(big)):
        assert torch.allclose(a, b, atol=1e-6)
    assert [h["optimizer_steps"] for h in acc.history] == [4, 4]
    assert [h["steps"] for h in acc.history] == [8, 8]
    # the clip was active (otherwise the test would not check clipping of the accumulated gradient)
    noclip = fit(tmp_path / "noclip", chunks(64, 16), accumulate=1, epochs=2)
    assert not all(torch.allclose(a, b) for a, b in zip(params(noclip), params(big)))


def test_partial_group_at_epoch_end_is_stepped_and_averaged(tmp_path):
    # 3 batches of 8 with accumulate=2: a group of 2 and a group of 1 == batches of 16 and 8
    acc = fit(tmp_path / "acc", chunks(24, 8), accumulate=2)
    ref = fit(tmp_path / "ref", [torch.arange(0, 16), torch.arange(16, 24)], accumulate=1)
    assert acc.history[0]["optimizer_steps"] == 2
    for a, b in zip(params(acc), params(ref)):
        assert torch.allclose(a, b, atol=1e-6)


def test_accumulation_handles_batches_without_length(tmp_path):
    class Streaming(RegressionTask):
        def train_batches(self, epoch):
            return iter(self.batches)

    task = Streaming(chunks(32, 8))
    optim = OptimConfig(name="sgd", lr=0.05, warmup_epochs=0, epochs=1, accumulate=3)
    tr = Trainer(task, optim, tmp_path, CPU, progress=False)
    tr.fit()
    assert tr.history[0]["optimizer_steps"] == 2 and tr.history[0]["steps"] == 4


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Linear(16, 1)
        self.formats: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.formats.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return self.head(self.conv(x).mean((2, 3)))


def test_channels_last_decision():
    conv, lin = ConvNet(), nn.Linear(100, 10)
    assert conv_fraction(conv) > 0.5 and conv_fraction(lin) == 0.0
    cuda = torch.device("cuda")
    assert use_channels_last(conv, "auto", cuda) and not use_channels_last(lin, "auto", cuda)
    assert not use_channels_last(conv, "auto", CPU)
    assert use_channels_last(lin, "always", CPU) and not use_channels_last(conv, "never", cuda)
    with pytest.raises(ConfigError):
        use_channels_last(conv, "sometimes", CPU)


class ImageTask(RegressionTask):
    def __init__(self, batches):
        torch.manual_seed(3)
        super().__init__(batches, ConvNet())
        g = torch.Generator().manual_seed(2)
        self.x = torch.randn(32, 3, 8, 8, generator=g)
        self.y = self.x.mean((1, 2, 3))


def _image_fit(tmp_path, runtime, **kw) -> Trainer:
    task = ImageTask(chunks(32, 8))
    optim = OptimConfig(name="sgd", lr=0.05, warmup_epochs=0, epochs=1)
    tr = Trainer(task, optim, tmp_path, CPU, progress=False, runtime=runtime, **kw)
    tr.fit()
    return tr


def test_channels_last_always_converts_weights_and_inputs(tmp_path):
    cl = _image_fit(tmp_path / "cl", RuntimeConfig(channels_last="always"))
    plain = _image_fit(tmp_path / "plain", RuntimeConfig(channels_last="never"))
    assert cl.channels_last and not plain.channels_last
    assert cl.model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(cl.model.formats) and not any(plain.model.formats)
    for a, b in zip(params(cl), params(plain)):
        assert torch.allclose(a, b, atol=1e-5)
    # the checkpoint loads into a plain (contiguous) model
    fresh = ConvNet()
    fresh.load_state_dict(load_checkpoint(tmp_path / "cl" / "last.pt")["model"])
    assert torch.allclose(fresh.conv.weight, cl.model.conv.weight)


def test_compile_wraps_the_training_forward_and_checkpoints_stay_plain(tmp_path):
    compiled = _image_fit(tmp_path / "c", RuntimeConfig(compile=True), compile_backend="eager")
    plain = _image_fit(tmp_path / "p", RuntimeConfig())
    assert hasattr(compiled.train_module, "_orig_mod") and compiled.task.train_module is compiled.train_module
    assert plain.train_module is plain.model
    for a, b in zip(params(compiled), params(plain)):
        assert torch.allclose(a, b, atol=1e-6)
    for name in ("last.pt", "best.pt"):
        keys = load_checkpoint(tmp_path / "c" / name)["model"].keys()
        assert set(keys) == set(ConvNet().state_dict().keys())


class _CountingTensor:
    """Stands in for a device tensor and counts how often it is read back to the host."""

    reads = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        _CountingTensor.reads += 1
        return self.value


def test_step_logs_read_each_term_once_and_only_when_looked_at():
    from sarbridge.core.trainer import StepLogs

    _CountingTensor.reads = 0
    logs = StepLogs({"loss": _CountingTensor(1.5), "ce": _CountingTensor(0.25)})  # type: ignore[dict-item]
    assert len(logs) == 2 and list(logs) == ["loss", "ce"] and _CountingTensor.reads == 0
    assert logs["loss"] == 1.5 and logs["loss"] == 1.5 and _CountingTensor.reads == 1
    assert dict(logs) == {"loss": 1.5, "ce": 0.25} and _CountingTensor.reads == 2


def test_diverged_loss_stops_with_one_line_and_epoch_means_are_exact(tmp_path):
    from sarbridge.core.errors import SarbridgeError
    from sarbridge.core.trainer import check_finite

    with pytest.raises(SarbridgeError, match="diverged"):
        check_finite({"loss": float("nan")})
    check_finite({"loss": 3.0})

    class NaNAtSecond(RegressionTask):
        def training_step(self, idx, device):
            out = super().training_step(idx, device)
            if len(self.dtypes) == 2:
                out["loss"] = out["loss"] * float("nan")
            return out

    task = NaNAtSecond(chunks(64, 16))
    optim = OptimConfig(name="sgd", lr=0.05, warmup_epochs=0, epochs=1)
    tr = Trainer(task, optim, tmp_path / "nan", CPU, seed=0, progress=False)
    before = params(tr)
    with pytest.raises(SarbridgeError, match="diverged"):
        tr.fit()
    # on the CPU every batch is checked before its optimiser step: only the first step was applied
    assert not all(torch.equal(a, b) for a, b in zip(before, params(tr)))
    assert all(torch.isfinite(p).all() for p in params(tr))

    # the logged epoch means are the plain means of the per-batch losses
    seen: list[float] = []
    tr = fit(tmp_path / "ok", chunks(64, 16), callbacks=[lambda t, e, s, logs: seen.append(logs["loss"])])
    assert tr.history[0]["loss"] == pytest.approx(sum(seen) / len(seen), rel=1e-6)
