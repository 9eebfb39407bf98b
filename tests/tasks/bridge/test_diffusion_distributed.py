"""Bridge training under torchrun (2 gloo processes): one run folder, disjoint data shares, and
gradients synchronised: the ranks see different pairs, timesteps and noise (their losses differ)
yet hold identical weights after every optimiser step. Plus the sampler that deals the shares."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from ddp_launch import torchrun
from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.errors import DataError
from sarbridge.tasks.bridge.train import ShardedRandomSampler
from sarbridge.tasks.bridge.translate import BridgeTranslator

TESTS = Path(__file__).resolve().parents[2]
DEMO = TESTS.parent / "configs" / "bbdm_demo.yaml"
TINY = [
    "data.resolution=[16,8]", "data.val_fraction=0.25", "data.vflip=0.0",
    "model.channels=8", "model.channel_mult=[1,2]", "model.layers_per_block=1", "model.attention_resolutions=[]",
    "model.attention_head_dim=8", "model.mid_attention=false", "model.norm_num_groups=4",
    "model.resblock_updown=false", "train.batch_size=2", "optim.epochs=2", "optim.lr=0.002",
    "eval.sample_images=2", "eval.sample_steps=3", "eval.batch_size=8", "bridge.sample_steps=4", "device=cpu",
]

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from sarbridge.app.cli import main
    from sarbridge.tasks.bridge.config import load_diffusion_config
    from sarbridge.tasks.bridge.train import train_diffusion
    from sarbridge.core.distributed import init_distributed

    out, config, spec = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    ctx = init_distributed("cpu")
    cfg = load_diffusion_config(config, spec["overrides"])
    seen = {"indices": [], "losses": [], "weights": []}

    def record(trainer, epoch, step, logs):
        if step == 0:
            seen["indices"].append(list(trainer.task.sampler))
            seen["wrapper"] = type(trainer.task.train_module).__name__
        seen["losses"].append(logs["loss"])
        seen["weights"].append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))

    metrics = train_diffusion(cfg, out / "run", progress=False, callbacks=[record])
    both = [None, None]
    dist.all_gather_object(both, seen.pop("weights"))
    seen["same_weights"] = [bool(torch.equal(a, b)) for a, b in zip(*both)]
    seen["metrics_keys"] = sorted(metrics)
    seen["cli_code"] = main(spec["cli"])
    (out / f"report{ctx.rank}.json").write_text(json.dumps(seen))
    """
)




@pytest.fixture(scope="module")
def toy_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp_toy") / "pairs"
    rng = np.random.default_rng(0)
    for i in range(12):
        opt = np.array(Image.fromarray(rng.integers(0, 256, (3, 2, 3)).astype(np.uint8)).resize((8, 16), Image.BILINEAR))
        sar = (255 - opt.mean(-1)).astype(np.uint8)
        for sub, arr, suffix in (("opt", opt, "RGB"), ("sar", sar, "SAR")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"{i:04d}_s01c1_{suffix}.png")
    return root


@pytest.fixture(scope="module")
def two_rank_run(toy_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], str]:
    out = tmp_path_factory.mktemp("diff_ddp")
    (out / "worker.py").write_text(WORKER)
    overrides = [f"data.root={toy_pairs}", *TINY, "train.steps_per_epoch=null"]  # one pass over the pairs
    cli = ["diffusion-train", "--config", str(DEMO), "--data", str(toy_pairs), "--direction", "opt2sar",
           "--out", str(out / "cli"), "--quiet"]
    for o in [*TINY, "train.steps_per_epoch=2", "optim.epochs=1"]:
        cli += ["--set", o]
    proc = torchrun([str(out / "worker.py"), str(out), str(DEMO), json.dumps({"overrides": overrides, "cli": cli})],
                    cwd=out)
    return out, [json.loads((out / f"report{r}.json").read_text()) for r in range(2)], proc.stdout


def test_two_rank_training_writes_one_run_that_loads_in_one_process(two_rank_run):
    out, reports, stdout = two_rank_run
    files = {"config.yaml", "data_paths.json", "last.pt", "best.pt", "train_log.jsonl", "metrics.json"}
    for name, epochs in (("run", 2), ("cli", 1)):
        run = out / name
        assert {p.name for p in run.iterdir()} == files, name
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        assert [h["epoch"] for h in log] == list(range(epochs))
        state = load_checkpoint(run / "best.pt", task="diffusion")
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
        tr = BridgeTranslator.from_checkpoint(run / "best.pt", device="cpu")
        assert tr.direction == "opt2sar" and tr.resolution == [16, 8]
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["data"]["train"]["pairs"] == 9
    assert metrics["train_steps"] == 2 * 2  # 2 epochs x (9 // 2 = 4 pairs per rank) / batch 2
    assert json.loads((out / "cli" / "metrics.json").read_text())["train_steps"] == 2  # steps_per_epoch per rank
    assert [r["cli_code"] for r in reports] == [0, 0]
    assert stdout.count("training / ") == 1 and stdout.count("selected epoch") == 1  # rank 0 prints


def test_ranks_draw_disjoint_shares_and_hold_identical_weights(two_rank_run):
    _, (r0, r1), _ = two_rank_run
    assert r0["wrapper"] == r1["wrapper"] == "DistributedDataParallel"
    for e in range(2):
        a, b = r0["indices"][e], r1["indices"][e]
        assert len(a) == len(b) == 9 // 2 and not set(a) & set(b) and len(set(a)) == len(a)
    assert r0["indices"][0] != r0["indices"][1]  # reshuffled per epoch
    assert len(r0["losses"]) == len(r1["losses"]) == 4
    assert all(x != y for x, y in zip(r0["losses"], r1["losses"]))  # different data / timesteps / noise
    assert r0["same_weights"] == r1["same_weights"] == [True] * 4  # gradients were averaged


def test_sharded_sampler_equals_distributed_sampler_and_shares_disjointly():
    for size, world in ((9, 2), (10, 3), (4, 4)):
        for epoch in (0, 3):
            shares = []
            for rank in range(world):
                s = ShardedRandomSampler(size, rank, world, seed=7)
                ref = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=7, drop_last=True)
                s.set_epoch(epoch)
                ref.set_epoch(epoch)
                assert list(s) == list(ref) and len(s) == len(ref) == size // world
                shares.append(list(s))
            flat = [i for sh in shares for i in sh]
            assert len(set(flat)) == len(flat) == size - size % world


def test_sharded_sampler_with_a_fixed_number_of_samples():
    world, size, n = 2, 5, 6  # 12 indices drawn from 5 items: whole permutations, then a partial one
    samplers = [ShardedRandomSampler(size, r, world, seed=1, num_samples=n) for r in range(world)]
    whole = samplers[0].global_indices()
    assert len(whole) == world * n and sorted(whole[:5]) == sorted(whole[5:10]) == list(range(5))
    assert [list(s) for s in samplers] == [whole[0::2], whole[1::2]]
    assert all(len(s) == n for s in samplers)
    samplers[0].set_epoch(1)
    assert samplers[0].global_indices() != whole
    with pytest.raises(DataError, match="cannot be shared"):
        ShardedRandomSampler(1, 0, 2)
    with pytest.raises(ValueError):
        ShardedRandomSampler(5, 2, 2)


def test_single_process_keeps_the_random_sampler(toy_pairs):
    from sarbridge.data.pairs import split_pairs
    from sarbridge.tasks.bridge.config import load_diffusion_config
    from sarbridge.tasks.bridge.pairs import load_pairs
    from sarbridge.tasks.bridge.train import DiffusionTask

    cfg = load_diffusion_config(DEMO, [f"data.root={toy_pairs}", *TINY, "train.steps_per_epoch=3"])
    pairs, _ = load_pairs(cfg.data, seed=cfg.seed)
    train, val = split_pairs(pairs, cfg.data.val_fraction, seed=cfg.seed, min_groups=1)
    task = DiffusionTask(cfg, train, val, progress=False)
    assert isinstance(task.sampler, torch.utils.data.RandomSampler) and len(task.sampler) == 6
    torch.manual_seed(0)
    first = list(task.train_batches(0).sampler)
    torch.manual_seed(0)
    assert list(task.train_batches(1).sampler) == first  # drawn from the global RNG the trainer seeds
