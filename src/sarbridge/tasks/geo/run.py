"""``sarbridge geo train`` / ``geo evaluate``: read the data, train both stages, evaluate, write results.

A run folder holds ``config.yaml``, ``coarse/`` and ``refine/`` (trainer checkpoints and logs),
``geo_model.pt`` (the inference bundle), ``metrics.json``
(``{"coarse": {...}, "refined": {...}, "meta": {...}}``), ``results.md`` and ``retrieval.png``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.config import rerank_arguments
from sarbridge.core.errors import ConfigError, DataError
from sarbridge.core.run import TrainingRun
from sarbridge.core.utils import (
    atomic_write_json,
    atomic_write_text,
    resolve_device,
    seed_everything,
)
from sarbridge.data.georaster import read_georaster
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.tasks.geo import readers
from sarbridge.tasks.geo.bundle import (
    GeoModel,
    build_refiner,
    load_geo_model,
    save_geo_model,
)
from sarbridge.tasks.geo.config import GeoConfig, GeoEvalConfig, validate_geo
from sarbridge.tasks.geo.data_fingerprint import geo_data_difference, geo_data_fingerprint
from sarbridge.tasks.geo.datasets import PatchImages, embed_patches
from sarbridge.tasks.geo.evaluate import (
    RankedResult,
    calibrate_temperature,
    evaluate_localisation,
    patch_size_m,
)
from sarbridge.tasks.geo.matcher_stage import train_or_load_matcher
from sarbridge.tasks.geo.model import GeoEmbeddingNet
from sarbridge.tasks.geo.patches import LocalisationData
from sarbridge.tasks.geo.queries import build_map_localisation
from sarbridge.tasks.geo.rankings import write_geo_rankings
from sarbridge.tasks.geo.registered import add_registered_stage, write_registration_figure
from sarbridge.tasks.geo.results import REGISTRATION_FIGURE, localisation_table, stage_lines
from sarbridge.tasks.geo.sn6 import is_cmpc_sn6_folder, read_cmpc_sn6
from sarbridge.tasks.geo.train import (
    GeoCoarseTask,
    GeoRefineTask,
    area_views,
    calibrate_noise,
    graphs_from_embeddings,
    noisy_graphs,
    refine_optim,
)
from sarbridge.viz.figures import RankedCandidate, RankedRow, Status, retrieval_figure


def load_localisation(cfg: GeoConfig) -> LocalisationData:
    """The references and queries ``cfg.data`` names.

    Raises:
        ConfigError: the config names no data.
        DataError: the data is missing or malformed.
    """
    d = cfg.data
    if d.format in ("sn6", "scene") and d.root and Path(d.root).is_dir() and is_cmpc_sn6_folder(d.root):
        # the released SN6-CMPC layout (``scene`` folders hold optical.tif instead: auto-detected)
        return read_cmpc_sn6(d.root, setting=d.setting, seed=cfg.seed)
    if d.format in ("scene", "map"):
        if d.format == "scene":
            if not d.root:
                raise ConfigError("data.root is empty", "pass --data DIR (a folder with optical.tif and sar.tif)")
            root = Path(d.root)
            if not root.is_dir():
                raise DataError(f"scene folder '{root}' not found", "generate one with 'sarbridge geo synth --out DIR'")
            map_path, sar_paths = root / "optical.tif", [root / "sar.tif"]
        else:
            map_path, sar_paths = Path(str(d.map)), [Path(s) for s in d.sar]
        optical = read_georaster(map_path)
        sars = [read_georaster(p) for p in sar_paths]
        return build_map_localisation(optical, sars, patch_size=d.patch_size, stride=d.stride, setting=d.setting,
                                      count=d.queries, split=d.split, fractions=tuple(d.fractions), seed=cfg.seed)
    if not d.root:
        raise ConfigError("data.root is empty", f"pass --data PATH for data.format={d.format}")
    if d.format == "sn6":
        if Path(d.root).is_dir():
            raise DataError(f"'{d.root}' is neither an SN6-CMPC folder nor a sarbridge JSON listing",
                            "pass ROOT holding {train,test}/annotations/{opt,sar}/ and imgs/, or a JSON listing file")
        return readers.read_geo_listing(d.root)
    if d.format == "manifest":
        return readers.read_geo_manifest(d.root)
    return readers.read_bigearthnet_localisation(d.root)


def train_geo(cfg: GeoConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
              progress: bool = True, data: LocalisationData | None = None) -> dict[str, Any]:
    """Train the coarse model and the refiner, evaluate on the test queries, write the run folder.

    Args:
        cfg: the run's config.
        out_dir: run folder.
        resume: continue from the checkpoints in ``out_dir``.
        overwrite: start over in a folder that already holds a run.
        progress: progress bars and per-epoch lines.
        data: use this instead of reading ``cfg.data``.

    Under ``torchrun --nproc_per_node N`` every process runs this: both stages train with
    DistributedDataParallel, patches are embedded in shards, and only rank 0 writes files and
    shows progress (every rank returns the same metrics).

    With ``resume`` each stage continues from its ``last.pt`` when it has one and starts afresh
    otherwise (a run interrupted in the coarse stage has no ``refine/last.pt`` yet).

    Returns:
        The metrics written to ``metrics.json``.
    """
    validate_geo(cfg)
    run = TrainingRun.open(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress,
                           marker="coarse/last.pt", resume_missing="fresh")
    progress, device = run.progress, run.device
    data = data if data is not None else load_localisation(cfg)
    train_view, test_view = area_views(data)
    train_q, val_q, test_q = train_view.split("train"), train_view.split("val"), test_view.split("test")
    if not test_q:
        raise DataError(f"'{cfg.data.root or cfg.data.map}' yields no test queries",
                        "raise data.fractions[2], data.queries, or use a larger map/strip")
    task = run.build_task(lambda: GeoCoarseTask(cfg, train_view, train_q, val_q, progress))
    task.preload()
    run.write_config()  # before the coarse trainer (and its resume), as this pipeline always has
    trainer = run.trainer(task, stage="coarse")
    coarse = trainer.fit()
    trainer.close()  # the refiner stage may wrap part of this model again
    del trainer
    coarse.load_best(task.model)
    encoder = task.model.encoder.to(device).eval()
    refiner: torch.nn.Module | None = None
    refine_info: dict[str, Any] = {}
    if cfg.refine.enabled:
        refiner, refine_info = _train_refiner(run, task, encoder, train_view)
    matcher, matcher_info = train_or_load_matcher(cfg, train_view, train_q, run.out, run.resume, device,
                                                  progress, write=run.is_main)
    info = {"epoch": coarse.best_epoch, "patch_size_m": task.patch_m, "crs": data.crs, "data": data.name,
            "coarse_selected_epoch": coarse.best_epoch, "data_fingerprint": geo_data_fingerprint(cfg.data),
            **refine_info, **matcher_info}
    bundle_path = run.out / "geo_model.pt"
    run.write(lambda _: save_geo_model(bundle_path, cfg, encoder.cpu(), refiner.cpu() if refiner is not None else None,
                                       info, matcher))
    model = load_geo_model(bundle_path)
    if val_q:  # which stages help, and the registration threshold, decided on the validation queries
        val_metrics = evaluate_geo_model(model, train_view, val_q, None, device, progress, choose=True)
        info["stage_choice"] = val_metrics["meta"]["stage_choice"]
        run.write(lambda _: save_geo_model(bundle_path, cfg, model.encoder.cpu(),
                                           model.refiner.cpu() if model.refiner is not None else None, info,
                                           model.matcher))
        model = load_geo_model(bundle_path)
    metrics = evaluate_geo_model(model, test_view, test_q, run.results_dir, device, progress,
                                 title=f"sarbridge localisation: {cfg.name}")
    run.wait()
    return metrics


def _train_refiner(run: TrainingRun, task: GeoCoarseTask, encoder: GeoEmbeddingNet,
                   view: LocalisationData) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Stage 2 on the coarse stage's own reference and query patches (not prepared again)."""
    cfg: GeoConfig = task.cfg
    device, progress = run.device, run.progress
    r, bs = cfg.refine, cfg.eval.batch_size
    ref_emb = embed_patches(encoder, task.refs, device, bs, progress, "embedding references")
    ref_xy = view.reference_xy()

    def embed(queries: Sequence[Any], images: PatchImages) -> tuple[torch.Tensor, torch.Tensor]:
        targets = torch.as_tensor([q.target for q in queries], dtype=torch.long)
        return embed_patches(encoder, images, device, bs, progress, "embedding queries"), targets

    q_train, t_train = embed(task.train_q, task.pairs.sar)
    val_in = None
    if task.val_sar is not None:
        q_val, t_val = embed(task.val_q, task.val_sar)
        val_in = graphs_from_embeddings(q_val, ref_emb, ref_xy, t_val, r.top_k)
    noise = r.train_noise
    if noise is None:
        val_top1 = float((val_in.target_pos == 0).float().mean() * 100.0) if val_in is not None else 100.0
        noise = calibrate_noise(q_train, ref_emb, t_train, val_top1, seed=cfg.seed)
    train_in = noisy_graphs(q_train, ref_emb, ref_xy, t_train, r.top_k, noise, r.noise_draws, cfg.seed)
    refiner = task.model.refiner if task.model.refiner is not None else build_refiner(cfg, task.patch_m)
    rtask = GeoRefineTask(cfg, refiner, train_in, val_in)
    result = run.trainer(rtask, stage="refine", optim=refine_optim(cfg), amp=False, eval_every=1).fit()
    result.load_best(refiner)
    reachable = float((train_in.target_pos >= 0).float().mean() * 100.0)
    top1 = float((train_in.target_pos == 0).float().mean() * 100.0)
    temperature = 1.0
    if val_in is not None:
        refiner.eval()
        with torch.no_grad():
            logits = refiner(val_in.query_emb.to(device), val_in.cand_emb.to(device), val_in.cand_xy.to(device),
                             val_in.coarse_scores.to(device)).float().cpu()
        temperature = calibrate_temperature(logits, val_in.cand_xy, view.query_xy(task.val_q), r.centroid_top)
    return refiner.eval(), {"centroid_temperature": temperature, "refine_selected_epoch": result.best_epoch, "refine_mode": cfg.refine.mode,
                            "refine_train_noise": noise, "refine_train_graphs": len(train_in),
                            "refine_train_coarse_top1": top1, "refine_train_target_in_topk": reachable}


def evaluate_geo_model(model: GeoModel, view: LocalisationData, queries: Sequence[Any], out: str | Path | None,
                       device: torch.device, progress: bool = True, title: str = "sarbridge localisation",
                       rerank: str | None = None, pictures: int = 6,
                       eval_cfg: GeoEvalConfig | None = None, choose: bool = False,
                       meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed references and queries with a bundle, rank, refine, register, and write the results (when ``out``).

    ``eval_cfg`` (default: the bundle's own) sets batch size, search depth, re-ranking, query expansion
    and the registration (``eval.register``). ``choose``: the queries are validation queries; decide
    which stages help and calibrate the registration threshold (``meta.stage_choice``,
    :mod:`sarbridge.tasks.geo.stages`); otherwise the bundle's recorded choice is used and reported.
    ``meta``: more entries for ``metrics["meta"]`` (e.g. ``data_changed``).
    """
    cfg = model.cfg
    ev = eval_cfg if eval_cfg is not None else cfg.eval
    enc = model.encoder.to(device).eval()
    refs = PatchImages(view.references, OPTICAL, model.spec, cache=False)
    qs = PatchImages(list(queries), SAR, model.spec, cache=False)
    ref_emb = embed_patches(enc, refs, device, ev.batch_size, progress, "embedding references")
    q_emb = embed_patches(enc, qs, device, ev.batch_size, progress, "embedding queries")
    refiner = model.refiner.to(device) if model.refiner is not None else None
    metrics, results = evaluate_localisation(
        view, queries, ref_emb, q_emb, top_k=min(max(ev.top_k, 20, ev.register.top_k if ev.register.enabled else 0),
                                                 len(ref_emb)), refiner=refiner,
        refine_top_k=cfg.refine.top_k, centroid_top=cfg.refine.centroid_top,
        temperature=float(model.info.get("centroid_temperature", 1.0)), rerank=rerank or ev.rerank,
        rerank_args=rerank_arguments(ev), device=device,
        query_expansion=ev.query_expansion, qe_k=ev.qe_k, qe_alpha=ev.qe_alpha)
    metrics["meta"] = {
        "data": view.name, "crs": view.crs, "references": len(view.references), "queries": len(queries),
        "setting": cfg.data.setting, "split": cfg.data.split, "patch_size_m": round(patch_size_m(view), 3),
        "checkpoint": str(model.path), "device": str(device), "query_expansion": ev.query_expansion,
        "selection": "validation top-1 (coarse: held-out training-area queries; refine: same)",
        **(meta or {}),
    }
    choice = model.info.get("stage_choice") if isinstance(model.info.get("stage_choice"), dict) else None
    registered = add_registered_stage(metrics, results, view, queries, ev.register, device, enc, model.spec, choice,
                                      choose=choose, progress=progress, matcher=model.matcher)
    if out is not None:
        write_geo_results(Path(out), metrics, results, view, title, pictures, spec=model.spec)
        if registered is not None and results["registered"].queries:
            write_registration_figure(Path(out) / REGISTRATION_FIGURE, results["registered"], *registered, view)
    return metrics


def write_geo_results(out: Path, metrics: dict[str, Any], results: dict[str, RankedResult], view: LocalisationData,
                      title: str, pictures: int = 6, spec: Any = None, rankings: bool = True) -> None:
    """``metrics.json``, ``results.md`` and ``retrieval.png`` (best stage's ranked lists; SAR queries
    shown as the model sees them when the preprocessing ``spec`` is given), and with ``rankings``
    ``rankings.json`` + ``thumbs/`` (per-query top-10 lists of every stage, for ``sarbridge report``)."""
    out.mkdir(parents=True, exist_ok=True)
    if rankings:
        write_geo_rankings(out, results, view, spec=spec)
    atomic_write_json(out / "metrics.json", metrics)
    stage = "refined" if "refined" in results else "coarse"
    picture = None
    if pictures > 0 and results[stage].queries:
        picture = retrieval_picture(out / "retrieval.png", results[stage], view, pictures, f"{title} ({stage})",
                                    spec=spec)
    md = [f"# {title}", "", localisation_table(metrics),
          "top-k and mAP: percent of queries whose target (largest-overlap patch) is ranked within k; errors in "
          "metres between the estimated and the true query centre; succ_Xm: percent within X m.\n"]
    md.append("\n".join(f"- {line}" for line in stage_lines(metrics)) + "\n")
    if "registered" in metrics:
        md.append(f"![registration]({REGISTRATION_FIGURE})\n\nMatching surfaces of sampled and of the worst "
                  "registered queries (brighter = better match; green: true footprint, blue: found).\n")
    md.append("\n".join(f"- {k}: {v}" for k, v in (metrics.get("meta") or {}).items()) + "\n")
    if picture is not None:
        md.append(f"![retrieval]({picture.name})\n\nGreen: the true patch; yellow: an overlapping neighbour "
                  "(near-miss); red: wrong. Captions: rank, distance of the candidate's centre to the true "
                  "position, similarity.\n")
    atomic_write_text(out / "results.md", "\n".join(md))


def retrieval_picture(path: Path, result: RankedResult, view: LocalisationData, rows: int, title: str,
                      k: int = 5, seed: int = 0, spec: Any = None) -> Path:
    """Query, its top-``k`` with true match green, overlapping neighbours yellow, distances in metres.

    Half the rows are random queries, half the worst (largest localisation error)."""
    qxy = view.query_xy(result.queries)
    err = np.linalg.norm(result.pred_xy - qxy, axis=1)
    rng = np.random.default_rng(seed)
    n = len(result.queries)
    worst = list(np.argsort(-err)[: rows // 2])
    rest = [i for i in rng.permutation(n) if i not in worst][: rows - len(worst)]
    ref_xy = view.reference_xy()
    out_rows = []
    for i in sorted(rest) + worst:
        q = result.queries[i]
        cands = []
        for r in range(min(k, result.ranked.shape[1])):
            idx = int(result.ranked[i, r])
            status: Status = "match" if idx == q.target else "near" if idx in q.near else "wrong"
            d = float(np.linalg.norm(ref_xy[idx] - qxy[i]))
            cands.append(RankedCandidate(view.references[idx].load(), status,
                                         f"#{r + 1} {d:.0f} m s={float(result.scores[i, r]):.2f}"))
        pixels = q.load()
        shown = spec.to_uint8(pixels, SAR) if spec is not None else pixels
        out_rows.append(RankedRow(shown, f"query {q.index} err {err[i]:.0f} m", cands))
    return retrieval_figure(out_rows, path, title=title)


def split_queries(cfg: GeoConfig, split: str = "test") -> tuple[LocalisationData, list[Any]]:
    """Read the localisation data a config names and return the view and queries of ``split``.

    ``test`` queries live in the test area's view, ``train``/``val`` in the training area's.

    Raises:
        DataError: the split has no queries.
    """
    train_view, test_view = area_views(load_localisation(cfg))
    view = test_view if split == "test" else train_view
    queries = list(view.split(split))
    if not queries:
        raise DataError(f"no '{split}' queries in '{cfg.data.root or cfg.data.map}'",
                        "choose another --split (test, val, train) or data source")
    return view, queries


def evaluate_geo(model_path: str | Path, cfg_data: GeoConfig | None, out_dir: str | Path, device_name: str = "auto",
                 split: str = "test", progress: bool = True, rerank: str | None = None) -> dict[str, Any]:
    """Evaluate a trained bundle on the data a config names (``sarbridge geo evaluate``); ``cfg_data``
    None: the bundle's own config (the data it was trained on)."""
    model = load_geo_model(model_path)
    if cfg_data is None:
        cfg_data = model.cfg
    view, queries = split_queries(cfg_data, split)
    changed = geo_data_difference(model.info, cfg_data.data)
    if changed is not None:
        print(f"warning: the data of {view.name} differs from what model {model_path} was trained on ({changed}); "
              "results are not comparable with the training run's", file=sys.stderr)
    seed_everything(cfg_data.seed)
    return evaluate_geo_model(model, view, queries, out_dir, resolve_device(device_name), progress,
                              title=f"sarbridge localisation: evaluation of {Path(model_path).name}", rerank=rerank,
                              eval_cfg=cfg_data.eval, choose=split == "val",
                              meta={"data_changed": changed} if changed is not None else None)


__all__ = ["evaluate_geo", "evaluate_geo_model", "load_localisation", "split_queries", "train_geo", "write_geo_results"]
