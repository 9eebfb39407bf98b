"""Contrastive pretraining under torchrun (2 gloo processes): one run folder, disjoint data shares,
synchronised weights (learned temperature included), and the same updates as one process.

Rank ``r`` trains on the pairs ``perm[r::2]`` of the epoch's permutation (``DistributedSampler``).
With per-process negatives, averaging the two ranks' gradients is what one process with
``optim.accumulate=2`` over the interleaved batch list computes; with ``loss.gather_negatives``
one DDP step is one single-process step on the concatenation of both ranks' batches.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from ddp_launch import torchrun
from sarbridge.core.trainer import Trainer
from sarbridge.core.utils import seed_everything
from sarbridge.data.pairs import split_pairs
from sarbridge.data.synthetic import generate_hoss_dataset
from sarbridge.tasks.pretrain.config import load_pretrain_config
from sarbridge.tasks.pretrain.task import PretrainTask, backbone_from_checkpoint, read_config_pairs

TESTS = Path(__file__).resolve().parents[2]
ROOT = TESTS.parent
CONFIG = ROOT / "configs" / "pretrain_demo.yaml"
EPOCHS = 2
RUN_FILES = {"config.yaml", "data_paths.json", "last.pt", "best.pt", "train_log.jsonl", "metrics.json", "results.md"}


def tiny(root: Path, extra: list[str] = ()) -> list[str]:
    """Tiny deterministic run: no augmentation, no drop-path (the data order is the only randomness);
    SGD, since Adam turns rounding noise in (mathematically) zero gradients into full-size steps."""
    return [
        f"data.root={root}", "data.layout=synthetic", "data.image_size=[32,16]", "data.batch_size=6",
        "data.augment.pad=0", "data.augment.flip=0", "data.augment.random_erasing=0", "data.val_fraction=0.25",
        "model.backbone=vit_tiny_patch16_224", "model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2, patch_size: 8}",
        "model.drop_path=0", "optim.name=sgd", "optim.lr=0.05", "optim.warmup_epochs=0", f"optim.epochs={EPOCHS}", "device=cpu",
        *extra,
    ]


WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from sarbridge.app.cli import main
    from sarbridge.core.distributed import init_distributed
    from sarbridge.tasks.pretrain.config import load_pretrain_config
    from sarbridge.tasks.pretrain.task import train_pretrain

    out, config, spec = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    ctx = init_distributed("cpu")
    report = {"rank": ctx.rank, "world": ctx.world_size}
    for name, overrides in spec["runs"].items():
        cfg = load_pretrain_config(config, overrides)
        seen = {"indices": [], "steps": 0}

        def record(trainer, epoch, step, logs, seen=seen):
            if step == 0:  # the sampler has been set to this epoch
                seen["indices"].append(list(trainer.task.dist_sampler))
                seen["batch_size"] = trainer.task.loader.batch_size
                seen["wrapper"] = type(trainer.task.train_module).__name__
            seen["steps"] += 1
            seen["trainer"] = trainer

        metrics = train_pretrain(cfg, out / name, progress=False, callbacks=[record])
        model = seen.pop("trainer").model
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        both = [None, None]
        dist.all_gather_object(both, flat)
        seen["same_weights"] = bool(torch.equal(both[0], both[1]))
        seen["scale"] = float(model.criterion.scale)
        seen["meta"] = metrics["meta"]
        report[name] = seen
    report["cli_code"] = main(spec["cli"])
    (out / f"report{ctx.rank}.json").write_text(json.dumps(report))
    """
)




@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pre_ddp_synth")
    return generate_hoss_dataset(root, num_ids=16, num_distractors=0, seed=5, gsd_optical=3.0, gsd_sar=4.0,
                                 train_fraction=0.75, progress=False)


@pytest.fixture(scope="module")
def two_rank_run(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], str]:
    out = tmp_path_factory.mktemp("pre_ddp")
    (out / "worker.py").write_text(WORKER)
    cli = ["pretrain", "--config", str(CONFIG), "--out", str(out / "cli"), "--quiet"]
    for o in tiny(synth, ["optim.epochs=1"]):
        cli += ["--set", o]
    spec = {"runs": {"local": tiny(synth), "global": tiny(synth, ["loss.gather_negatives=true"])}, "cli": cli}
    proc = torchrun([str(out / "worker.py"), str(out), str(CONFIG), json.dumps(spec)], cwd=out)
    return out, [json.loads((out / f"report{r}.json").read_text()) for r in range(2)], proc.stdout


def _epoch_batches(cfg, n: int, epoch: int, batch_size: int) -> list[list[list[int]]]:
    """Each rank's batches of an epoch, as DistributedSampler(shuffle, drop_last, seed) + drop_last deal them."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
    total = n - n % 2
    shares = [perm[r:total:2] for r in range(2)]
    return [[s[i * batch_size:(i + 1) * batch_size] for i in range(len(s) // batch_size)] for s in shares]


def _single_process_reference(synth: Path, tmp: Path, gather: bool) -> tuple[dict[str, torch.Tensor], list[list[list[int]]]]:
    """Train one process on the batches the two ranks saw: interleaved with accumulate=2 (local
    negatives) or concatenated pairwise with accumulate=1 (global negatives)."""
    cfg = load_pretrain_config(CONFIG, tiny(synth, [] if gather else ["optim.accumulate=2"]))
    train, val = split_pairs(read_config_pairs(cfg), cfg.data.val_fraction, seed=cfg.seed)
    seed_everything(cfg.seed)
    task = PretrainTask(cfg, train, val)
    assert task.dist_sampler is None
    bs = min(cfg.data.batch_size, len(train) // 2)
    per_epoch = [_epoch_batches(cfg, len(train), e, bs) for e in range(EPOCHS)]

    def batches(epoch: int) -> DataLoader:
        r0, r1 = per_epoch[epoch]
        order = [a + b for a, b in zip(r0, r1)] if gather else [b for pair in zip(r0, r1) for b in pair]
        return DataLoader(task.train_ds, batch_sampler=order)

    task.train_batches = batches  # type: ignore[method-assign]
    trainer = Trainer(task, cfg.optim, tmp, torch.device("cpu"), seed=cfg.seed, amp=cfg.amp, progress=False)
    trainer.fit()
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}, per_epoch


def test_two_rank_pretraining_writes_one_run_that_loads_in_one_process(two_rank_run):
    out, reports, stdout = two_rank_run
    for name, epochs in (("local", EPOCHS), ("global", EPOCHS), ("cli", 1)):
        run = out / name
        assert {p.name for p in run.iterdir()} == RUN_FILES, name  # one set of files, no leftovers
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        assert [h["epoch"] for h in log] == list(range(epochs))
        state = torch.load(run / "best.pt", weights_only=False)
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
        backbone, spec, cfg, _ = backbone_from_checkpoint(run / "best.pt")
        assert spec.image_size == [32, 16] and cfg.runtime.precision == "auto"
        assert set(state["backbone"]) == set(backbone.state_dict())
    metrics = json.loads((out / "local" / "metrics.json").read_text())
    assert metrics["meta"]["processes"] == 2 and metrics["meta"]["negatives"] == "per-process batch"
    # every held-out pair is one query per direction (its partner is in the gallery)
    assert metrics["opt2sar"]["queries"] == metrics["sar2opt"]["queries"] == metrics["meta"]["val_pairs"] > 0
    assert json.loads((out / "global" / "metrics.json").read_text())["meta"]["negatives"].startswith("global")
    # the CLI prints its summary on rank 0 only
    assert [r["cli_code"] for r in reports] == [0, 0]
    assert stdout.count("pretrained backbone:") == 1 and stdout.count("pair retrieval on") == 1


def test_ranks_draw_disjoint_shares_and_stay_synchronised(two_rank_run):
    _, reports, _ = two_rank_run
    for name in ("local", "global"):
        r0, r1 = reports[0][name], reports[1][name]
        assert r0["wrapper"] == r1["wrapper"] == "DistributedDataParallel"
        assert r0["steps"] == r1["steps"] > 0 and r0["batch_size"] == r1["batch_size"] == 6
        for e in range(EPOCHS):
            a, b = set(r0["indices"][e]), set(r1["indices"][e])
            assert len(a) == len(r0["indices"][e]) == len(b) and not a & b  # disjoint, no repeats
        assert r0["indices"][0] != r0["indices"][1]  # reshuffled per epoch (set_epoch)
        assert r0["same_weights"] and r1["same_weights"], name  # temperature included
        assert r0["scale"] == r1["scale"] and r0["scale"] != pytest.approx(1 / 0.07)  # it was learned
        losses = ("first_epoch_loss", "last_epoch_loss")  # each rank logs the loss of its own batches
        assert {k: v for k, v in r0["meta"].items() if k not in losses} == \
            {k: v for k, v in r1["meta"].items() if k not in losses}


@pytest.mark.parametrize("gather", [False, True], ids=["local_negatives", "global_negatives"])
def test_two_rank_pretraining_equals_single_process(two_rank_run, synth, tmp_path, gather):
    out, reports, _ = two_rank_run
    ref, per_epoch = _single_process_reference(synth, tmp_path, gather)
    name = "global" if gather else "local"
    for e in range(EPOCHS):  # the reference replays exactly the ranks' shares
        for r in range(2):
            assert [i for b in per_epoch[e][r] for i in b] == reports[r][name]["indices"][e][:len(per_epoch[e][r]) * 6]
    ddp = torch.load(out / name / "last.pt", weights_only=False)["model"]
    assert "criterion.logit_scale" in ref
    for k, v in ref.items():
        assert torch.allclose(ddp[k], v, atol=2e-5, rtol=1e-4), (k, (ddp[k] - v).abs().max())


def test_global_negatives_differ_from_local_ones(two_rank_run):
    """Sanity check that gather_negatives changes the computation (else the test above proves nothing)."""
    out, _, _ = two_rank_run
    local = torch.load(out / "local" / "last.pt", weights_only=False)["model"]
    glob = torch.load(out / "global" / "last.pt", weights_only=False)["model"]
    assert not torch.allclose(local["criterion.logit_scale"], glob["criterion.logit_scale"])
