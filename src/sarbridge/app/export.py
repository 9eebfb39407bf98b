"""ONNX export of a trained retrieval model (re-ID checkpoint or geo bundle), with verification.

The exported graph maps ``image`` (B, 3, H, W) float32, ``modality`` (B,) int64 (0 optical, 1 SAR)
and, for re-ID models with the ship-size token, ``size`` (B, 3) float32 to ``embedding`` (B, D):
the L2-normalised retrieval embedding (what :class:`sarbridge.app.api.Embedder` and
``GeoEmbeddingNet.embed`` return). The batch axis is dynamic. The preprocessing the model was
trained with is stored as JSON in the ONNX ``metadata_props`` (key ``preprocess``), next to the
sarbridge version, the task and the input names.

Modality routing inside the network (the per-sample ``DualModule`` copies of CNNs, the dual patch
embedding of ViTs) branches on the data in eager PyTorch; for export only, those instances are
temporarily patched to compute both branches and select per sample with ``torch.where`` (same
result in eval mode), and the export is checked against the unpatched model with onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import sarbridge
from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.errors import CheckpointError, SarbridgeError
from sarbridge.core.optional import available, require
from sarbridge.core.utils import atomic_write
from sarbridge.nn.backbones import DualModule, ModalityAwareBackbone
from sarbridge.tasks.registry import ExportSpec, task_of_checkpoint

__all__ = ["EmbeddingExport", "export_onnx", "load_for_export"]

class EmbeddingExport(nn.Module):
    """``forward(image, modality[, size])`` -> L2-normalised retrieval embedding (B, D).

    Args:
        model: the task's model, e.g. a ``ReIDModel`` (task ``reid``) or a ``GeoEmbeddingNet`` (task ``geo``).
        task: the task name.
        export: how the task embeds (:class:`~sarbridge.tasks.registry.ExportSpec`).
    """

    def __init__(self, model: nn.Module, task: str, export: ExportSpec) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self._embed = export.embed
        self.uses_size = export.uses_size(model)

    def forward(self, image: torch.Tensor, modality: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
        emb = self._embed(self.model, image, modality, size if self.uses_size else None)
        return F.normalize(emb.float(), dim=1)


def _dual_forward_where(self: DualModule, x: torch.Tensor) -> torch.Tensor:
    """Export-time ``DualModule.forward``: both copies on every sample, selected per sample."""
    mask = self.sar_mask
    out_opt = self.optical(x)
    if mask is None:
        return out_opt
    out_sar = self.sar(x).to(out_opt.dtype)
    view = (-1,) + (1,) * (out_opt.dim() - 1)
    return torch.where(mask.to(torch.bool).view(view), out_sar, out_opt)


def _patches_where(self: ModalityAwareBackbone, x: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
    """Export-time ``ModalityAwareBackbone._patches`` without the data-dependent ``sar.any()``."""
    out = self.net.patch_embed(x)
    if self.sar_patch_embed is not None:
        view = (-1,) + (1,) * (out.dim() - 1)
        out = torch.where(sar.view(view), self.sar_patch_embed(x), out)
    return out


@contextlib.contextmanager
def export_patches(model: nn.Module) -> Iterator[int]:
    """Patch, per instance and only inside the ``with`` block, the data-dependent modality routing.

    Yields the number of patched modules; the original methods are restored on exit.
    """
    patched: list[nn.Module] = []
    for mod in model.modules():
        # instance attributes that shadow the class's methods (what ``mod.forward = ...`` does),
        # popped from the instance ``__dict__`` again below
        if isinstance(mod, DualModule):
            mod.__dict__["forward"] = types.MethodType(_dual_forward_where, mod)
            patched.append(mod)
        elif isinstance(mod, ModalityAwareBackbone) and mod.sar_patch_embed is not None:
            mod.__dict__["_patches"] = types.MethodType(_patches_where, mod)
            patched.append(mod)
    try:
        yield len(patched)
    finally:
        for mod in patched:
            for name in ("forward", "_patches"):
                mod.__dict__.pop(name, None)


def load_for_export(checkpoint: str | Path) -> tuple[EmbeddingExport, str, dict[str, Any], list[int]]:
    """The export wrapper (eval, CPU), the task, the preprocessing dict and the image size [H, W].

    Raises:
        CheckpointError: missing/foreign checkpoint, or a task without a retrieval embedding.
    """
    state = load_checkpoint(checkpoint)
    spec_of_task = task_of_checkpoint(state)
    if spec_of_task is None or spec_of_task.export is None:
        raise CheckpointError(f"checkpoint '{checkpoint}' is for task '{state.get('task')}', which has no retrieval "
                              "embedding to export",
                              "pass the best.pt of 'sarbridge train' or the geo_model.pt of 'sarbridge geo train'")
    del state
    task = spec_of_task.name
    model, spec = spec_of_task.export.load(checkpoint)
    wrapper = EmbeddingExport(model.float().cpu().eval(), task, spec_of_task.export).eval()
    pre = spec.to_dict()
    return wrapper, task, pre, [int(v) for v in pre["image_size"]]


def _example_inputs(wrapper: EmbeddingExport, image_size: list[int], batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded random inputs with both modalities present (alternating 0/1, starting with optical)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, *image_size, generator=g)
    modality = torch.arange(batch, dtype=torch.long) % 2
    if not wrapper.uses_size:
        return image, modality
    size = torch.rand(batch, 3, generator=g) * 2.0
    return image, modality, size


def _export_graph(wrapper: EmbeddingExport, args: tuple[torch.Tensor, ...], names: list[str], path: Path,
                  opset: int) -> str:
    """Write the graph to ``path``; returns the exporter used (``torchscript`` or ``dynamo``)."""
    errors: list[str] = []
    with export_patches(wrapper), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["embedding"],
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes={**{n: {0: "batch"} for n in names}, "embedding": {0: "batch"}})
            return "torchscript"
        except Exception as exc:  # TorchScript exporter missing or failing: try the dynamo exporter
            errors.append(f"torchscript: {type(exc).__name__}: {str(exc)[:120]}")
        try:
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["embedding"],
                              opset_version=opset, dynamo=True, external_data=False,
                              dynamic_shapes={n: {0: batch} for n in names})
            return "dynamo"
        except Exception as exc:
            errors.append(f"dynamo: {type(exc).__name__}: {str(exc)[:120]}")
    raise SarbridgeError(f"ONNX export failed ({'; '.join(errors)})", "report this with the checkpoint's config")


def _ort_run(path: Path, names: list[str], inputs: tuple[torch.Tensor, ...]) -> Any:
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(["embedding"], {n: t.numpy() for n, t in zip(names, inputs)})[0]


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17, batch_size: int = 2, verify: bool = True,
                atol: float = 1e-4) -> dict[str, Any]:
    """Export the L2-normalised retrieval embedding of a checkpoint to ONNX (dynamic batch).

    Args:
        checkpoint: a re-ID checkpoint (task ``reid``) or a geo bundle ``geo_model.pt`` (task ``geo``).
        out: the ``.onnx`` file to write (atomically; the folder is created).
        opset: ONNX opset version.
        batch_size: batch size of the example inputs used for export.
        verify: compare onnxruntime with PyTorch (skipped when onnxruntime is not installed) on a
            mixed optical/SAR batch of ``batch_size + 1`` images (a batch size other than the
            export one, to check the dynamic axis).
        atol: largest allowed absolute difference.

    Returns:
        ``{"path", "max_abs_diff" (None when not verified), "inputs", "opset" (of the written graph),
        "task", "exporter" (``torchscript``, or ``dynamo`` as the fallback), "embedding_dim"}``.

    Raises:
        SarbridgeError: onnx missing, export failure, or a verification difference above ``atol``.
        CheckpointError: missing or unsuitable checkpoint.
    """
    onnx = require("onnx", "onnx")
    if batch_size < 1:
        raise SarbridgeError(f"batch_size must be at least 1 (got {batch_size})", "use e.g. batch_size=2")
    out = Path(out)
    wrapper, task, pre, image_size = load_for_export(checkpoint)
    names = ["image", "modality"] + (["size"] if wrapper.uses_size else [])
    example = _example_inputs(wrapper, image_size, max(batch_size, 2), seed=0)
    with torch.no_grad():
        dim = int(wrapper(*example).shape[1])
    used: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        used["exporter"] = _export_graph(wrapper, example, names, tmp, opset)
        proto = onnx.load(str(tmp))
        meta = {
            "sarbridge_version": sarbridge.__version__, "task": task, "preprocess": json.dumps(pre),
            "inputs": json.dumps(names), "outputs": json.dumps(["embedding"]), "embedding_dim": str(dim),
            "modality": json.dumps({"optical": 0, "sar": 1}), "normalized": "l2",
            "source_checkpoint": Path(checkpoint).name,
        }
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.producer_name = "sarbridge"
        proto.producer_version = sarbridge.__version__
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        used["opset"] = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        if verify and _has_onnxruntime():  # checked before the rename: a failing export never lands at `out`
            check = _example_inputs(wrapper, image_size, max(batch_size, 2) + 1, seed=1)
            with torch.no_grad():
                ref = wrapper(*check).numpy()  # unpatched: the model's own per-sample routing
            got = _ort_run(tmp, names, check)
            diff = float(abs(got - ref).max()) if got.shape == ref.shape else float("inf")
            used["max_abs_diff"] = diff
            if not diff <= atol:
                raise SarbridgeError(f"ONNX output differs from PyTorch by {diff:.3g} (> {atol:g}); '{out}' not written",
                                     "try another --opset, or report this with the checkpoint's config")

    atomic_write(out, write)
    return {"path": str(out), "max_abs_diff": used.get("max_abs_diff"), "inputs": names, "opset": used["opset"], "task": task,
            "exporter": used["exporter"], "embedding_dim": dim}


def _has_onnxruntime() -> bool:
    return available("onnxruntime")
