"""The cumulative MOS ablation: baseline, +denoise, +CMAL, +CDGF, over one or more seeds.

Every row trains (or, for +CDGF, re-evaluates) with the same seed, data and budget. Results:
``ablation.json`` (``{"rows": [{"name", "all2all", "opt2sar", "sar2opt", "std", "runs"}], ...}``, the
metric keys of ``metrics.json``, means over seeds with standard deviations under ``std``) and
``ablation.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sarbridge.core.config import config_from_dict, config_to_dict, merge_dicts, parse_overrides, save_config
from sarbridge.core.errors import ConfigError
from sarbridge.core.utils import atomic_write_json, atomic_write_text
from sarbridge.data.splits import PROTOCOL_TITLES
from sarbridge.tasks.bridge.config import load_diffusion_config
from sarbridge.tasks.bridge.train import train_diffusion
from sarbridge.tasks.reid.config import ExperimentConfig
from sarbridge.tasks.reid.fusion import check_fusion_ready
from sarbridge.tasks.reid.task import evaluate_reid, train_reid
from sarbridge.viz.tables import markdown_table

ROW_NAMES = ("baseline", "+denoise", "+CMAL", "+CDGF")
METRICS = ("mAP", "R1", "R5", "R10", "mINP")
BridgeTrainer = Callable[[ExperimentConfig, Path, bool], str]


def _apply(cfg: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    items = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={_yaml_scalar(v)}" for k, v in overrides.items()]
    return config_from_dict(merge_dicts(config_to_dict(cfg), parse_overrides(items)), ExperimentConfig)


def _yaml_scalar(v: Any) -> str:

    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def ablation_configs(cfg: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """The four cumulative configurations (the +CDGF one is evaluated, not trained)."""
    base = _apply(cfg, {"data.sar_preprocess": "max", "data.sar_despeckle": None, "loss.cmal_weight": 0.0,
                        "fusion.enabled": False})
    denoise = _apply(base, cfg.ablation.denoise)
    cmal = _apply(denoise, cfg.ablation.cmal)
    cdgf = _apply(cmal, cfg.ablation.cdgf)
    return list(zip(ROW_NAMES, (base, denoise, cmal, cdgf)))


def summarize_runs(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and (population over seeds, ddof=0 when one seed) standard deviation per protocol metric."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for proto in PROTOCOL_TITLES:
        vals = {k: [r[proto][k] for r in runs if proto in r and k in r[proto]] for k in METRICS}
        if not vals["mAP"]:
            continue
        mean[proto] = {k: float(np.mean(v)) for k, v in vals.items()}
        mean[proto]["queries"] = runs[0][proto]["queries"]
        std[proto] = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()}
    return mean, std


def ablation_markdown(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    """One table: rows x protocols, mAP and R1 as mean ± std."""
    header = ["setting"]
    for title in PROTOCOL_TITLES.values():
        header += [f"{title} mAP", f"{title} R1"]
    body = []
    for row in rows:
        cells = [row["name"]]
        for proto in PROTOCOL_TITLES:
            m, s = row.get(proto), row["std"].get(proto)
            for k in ("mAP", "R1"):
                cells.append("n/a" if not m else (f"{m[k]:.1f} ± {s[k]:.1f}" if len(seeds) > 1 else f"{m[k]:.1f}"))
        body.append(cells)
    note = f"Seeds: {', '.join(map(str, seeds))}" + (" (mean ± standard deviation)." if len(seeds) > 1 else ".")
    return markdown_table(body, header) + "\n" + note + "\n"


def _bridge_overrides(cfg: ExperimentConfig) -> list[str]:
    return [
        f"data.root={cfg.data.root}", "direction=opt2sar", f"data.sar_preprocess={cfg.data.sar_preprocess}",
        f"data.sar_alpha={cfg.data.sar_alpha}", f"seed={cfg.seed}", f"device={cfg.device}",
        *cfg.ablation.diffusion_overrides,
    ]


def _bridge_ready(out_dir: Path) -> bool:
    return (out_dir / "best.pt").is_file() and (out_dir / "metrics.json").is_file()


def _missing_bridge_error() -> ConfigError:
    return ConfigError(
        "+CDGF needs an optical->SAR bridge: neither fusion.opt2sar_checkpoint nor ablation.diffusion_config is set",
        "set ablation.diffusion_config=configs/bbdm_demo.yaml or give a trained checkpoint",
    )


def check_ablation_ready(cfg: ExperimentConfig, out_dir: str | Path, custom_bridge_trainer: bool = False) -> None:
    """Check what every step needs before the first one trains (a missing bridge must not surface hours later).

    Checks the +CDGF row: its fusion checkpoints exist, or the optical->SAR bridge it will train has a
    loadable diffusion config (or was already trained into ``out_dir/bridge_opt2sar``).

    Raises:
        ConfigError: naming the missing key or file.
    """
    cdgf = ablation_configs(cfg)[-1][1]
    fusion = cdgf.fusion
    if not fusion.enabled:
        return
    trains_bridge = "optical" in fusion.modalities and not fusion.opt2sar_checkpoint
    if trains_bridge and not custom_bridge_trainer and not _bridge_ready(Path(out_dir) / "bridge_opt2sar"):
        if not cfg.ablation.diffusion_config:
            raise _missing_bridge_error()
        load_diffusion_config(cfg.ablation.diffusion_config, _bridge_overrides(cfg))  # a bad file or key fails now
    placeholder = "<trained by the ablation>"
    check_fusion_ready(replace(fusion, opt2sar_checkpoint=fusion.opt2sar_checkpoint or placeholder)
                       if trains_bridge else fusion, skip=(placeholder,))


def train_bridge_for_ablation(cfg: ExperimentConfig, out_dir: Path, progress: bool = True) -> str:
    """Train (once; reused by later seeds) the optical->SAR bridge that +CDGF samples from.

    The bridge learns from the training split only (identity pairs of a HOSS folder, or the same-pose
    pairs of the training ids of a generated set), with the re-identification model's SAR rule.

    Returns:
        The path of the bridge's ``best.pt``.
    """

    best = Path(out_dir) / "best.pt"
    if _bridge_ready(Path(out_dir)):
        return str(best)
    if not cfg.ablation.diffusion_config:
        raise _missing_bridge_error()
    dcfg = load_diffusion_config(cfg.ablation.diffusion_config, _bridge_overrides(cfg))
    train_diffusion(dcfg, out_dir, overwrite=True, progress=progress)
    return str(best)


def run_ablation(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    seeds: int = 1,
    train_bridge: BridgeTrainer | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the cumulative ablation and write ``ablation.json`` / ``ablation.md``.

    Args:
        cfg: the experiment (its ``ablation`` section defines the steps).
        out_dir: results folder; each run goes to ``out_dir/seed{S}/{row}``.
        seeds: number of seeds (``cfg.seed``, ``cfg.seed + 1``, ...).
        train_bridge: trains an optical->SAR bridge and returns its checkpoint when +CDGF needs one
            (default: :func:`train_bridge_for_ablation`).
        progress: progress bars.
    """
    out = Path(out_dir)
    check_ablation_ready(cfg, out, custom_bridge_trainer=train_bridge is not None)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    configs = ablation_configs(cfg)
    cdgf_cfg = configs[-1][1]
    needs_bridge = cdgf_cfg.fusion.enabled and "optical" in cdgf_cfg.fusion.modalities and not cdgf_cfg.fusion.opt2sar_checkpoint
    seed_list = [cfg.seed + i for i in range(seeds)]
    per_row: dict[str, list[dict[str, Any]]] = {name: [] for name in ROW_NAMES}
    for seed in seed_list:
        seed_dir = out / f"seed{seed}"
        trained: Path | None = None
        for name, row_cfg in configs:
            row_cfg = _apply(row_cfg, {"seed": seed})
            run_dir = seed_dir / name.lstrip("+").lower()
            if name != "+CDGF":
                metrics = train_reid(row_cfg, run_dir, progress=progress, overwrite=True)
                trained = run_dir / "best.pt"
            else:
                overrides = [f"fusion.{k}={_yaml_scalar(v)}" for k, v in config_to_dict(row_cfg)["fusion"].items()]
                if needs_bridge:
                    ckpt = (train_bridge or train_bridge_for_ablation)(row_cfg, out / "bridge_opt2sar", progress)
                    overrides.append(f"fusion.opt2sar_checkpoint={ckpt}")
                overrides.append(f"fusion.cache_dir={out / 'fusion_cache'}")
                assert trained is not None  # +CDGF is the last row: the +CMAL row before it trained this model
                metrics = evaluate_reid(trained, run_dir, device=row_cfg.device, progress=progress, overrides=overrides)
            per_row[name].append(metrics)
    rows = []
    for name in ROW_NAMES:
        mean, std = summarize_runs(per_row[name])
        rows.append({"name": name, **mean, "std": std,
                     "runs": [{p: r[p] for p in PROTOCOL_TITLES if p in r} for r in per_row[name]]})
    result = {"rows": rows, "seeds": seed_list,
              "protocol_source": per_row["baseline"][0].get("protocol_source")}
    atomic_write_json(out / "ablation.json", result)
    md = "# MOS ablation (cumulative)\n\n" + ablation_markdown(rows, seed_list)
    atomic_write_text(out / "ablation.md", md)
    return result
