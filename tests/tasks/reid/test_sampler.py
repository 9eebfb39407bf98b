"""Tests for sarbridge.tasks.reid.sampler.PKSampler: batch structure, modality balance, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sarbridge.core.errors import DataError
from sarbridge.data.hoss import load_hoss
from sarbridge.tasks.reid.sampler import PKSampler


def make_data(spec: dict[int, tuple[int, int]], seed: int = 0) -> tuple[list[int], list[int]]:
    """``{pid: (n_optical, n_sar)}`` -> shuffled ``pids, modalities`` lists."""
    pids, mods = [], []
    for pid, (n_opt, n_sar) in spec.items():
        pids += [pid] * (n_opt + n_sar)
        mods += [0] * n_opt + [1] * n_sar
    order = np.random.default_rng(seed).permutation(len(pids))
    return [pids[i] for i in order], [mods[i] for i in order]


def check_batches(sampler: PKSampler, pids, p: int, k: int) -> list[list[int]]:
    batches = list(sampler)
    assert batches, "no batches"
    for batch in batches:
        assert len(batch) == p * k
        assert all(isinstance(i, int) for i in batch)
        ids = [pids[i] for i in batch]
        counts = Counter(ids)
        assert len(counts) == p, counts
        assert set(counts.values()) == {k}, counts
        assert all(pid >= 0 for pid in ids)
        for g in range(p):  # identities come in contiguous groups of K
            assert len({pids[i] for i in batch[g * k:(g + 1) * k]}) == 1
    return batches


def groups_of(batches, k):
    return [b[i:i + k] for b in batches for i in range(0, len(b), k)]


SPEC = {pid: (3 + pid % 3, 2 + pid % 2) for pid in range(12)}


@pytest.mark.parametrize("balance", [True, False])
@pytest.mark.parametrize("p,k", [(4, 4), (3, 2), (2, 5)])
def test_batch_structure(balance, p, k):
    pids, mods = make_data(SPEC)
    sampler = PKSampler(pids, mods, num_ids=p, num_instances=k, balance_modalities=balance, seed=1)
    batches = check_batches(sampler, pids, p, k)
    assert len(sampler) == len(batches)


def test_each_image_used_at_most_once_per_epoch_when_identities_have_k_images():
    pids, mods = make_data({pid: (3, 3) for pid in range(10)})
    sampler = PKSampler(pids, mods, num_ids=4, num_instances=3, seed=0)
    batches = check_batches(sampler, pids, 4, 3)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    # 10 ids x 2 groups = 20 groups; batches of 4 groups drawn while >= 4 ids have groups left
    assert len(batches) >= 4


def test_identities_with_fewer_than_k_images_are_padded():
    pids, mods = make_data({0: (1, 0), 1: (1, 1), 2: (0, 2), 3: (2, 1)})
    sampler = PKSampler(pids, mods, num_ids=4, num_instances=4, seed=0)
    (batch,) = check_batches(sampler, pids, 4, 4)
    for g in groups_of([batch], 4):
        members = set(np.flatnonzero(np.asarray(pids) == pids[g[0]]).tolist())
        assert set(g) <= members


def test_distractors_are_never_sampled():
    pids, mods = make_data({-1: (10, 10), **{pid: (2, 2) for pid in range(6)}})
    sampler = PKSampler(pids, mods, num_ids=3, num_instances=2, seed=0)
    check_batches(sampler, pids, 3, 2)
    assert -1 not in sampler.index_by_pid


def test_balanced_groups_contain_both_modalities():
    pids, mods = make_data({pid: (n, n) for pid, n in enumerate([2, 3, 4, 5, 2, 3, 4, 5])})
    for epoch in range(3):
        sampler = PKSampler(pids, mods, num_ids=4, num_instances=4, seed=3)
        sampler.set_epoch(epoch)
        batches = check_batches(sampler, pids, 4, 4)
        for g in groups_of(batches, 4):
            assert Counter(mods[i] for i in g) == {0: 2, 1: 2}


def test_balanced_groups_on_real_hoss_train(hoss_sample_root):
    train = load_hoss(hoss_sample_root).train
    pids = [s.pid for s in train]
    mods = [s.modality_index for s in train]
    both = {p for p in set(pids) if {m for q, m in zip(pids, mods) if q == p} == {0, 1}}
    assert len(both) == 15
    for epoch in range(4):
        sampler = PKSampler(pids, mods, num_ids=4, num_instances=4, seed=0)
        sampler.set_epoch(epoch)
        batches = check_batches(sampler, pids, 4, 4)
        for g in groups_of(batches, 4):
            if pids[g[0]] in both:
                assert {mods[i] for i in g} == {0, 1}, [train[i].path for i in g]


def test_balanced_groups_with_unbalanced_identities():
    pids, mods = make_data({pid: (9, 1) for pid in range(4)})  # 9 optical + 1 SAR each
    sampler = PKSampler(pids, mods, num_ids=2, num_instances=4, seed=0)
    batches = check_batches(sampler, pids, 2, 4)
    for g in groups_of(batches, 4):
        assert {mods[i] for i in g} == {0, 1}


def test_single_modality_identities_still_form_groups():
    pids, mods = make_data({0: (4, 0), 1: (0, 4), 2: (2, 2)})
    sampler = PKSampler(pids, mods, num_ids=3, num_instances=4, seed=0)
    (batch,) = check_batches(sampler, pids, 3, 4)
    by_pid = {pids[g[0]]: {mods[i] for i in g} for g in groups_of([batch], 4)}
    assert by_pid == {0: {0}, 1: {1}, 2: {0, 1}}


def test_deterministic_for_seed_and_epoch():
    pids, mods = make_data(SPEC)
    a = PKSampler(pids, mods, num_ids=4, num_instances=2, seed=5)
    b = PKSampler(pids, mods, num_ids=4, num_instances=2, seed=5)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again does not advance any state
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)


def test_differs_across_epochs_and_seeds():
    pids, mods = make_data(SPEC)
    s = PKSampler(pids, mods, num_ids=4, num_instances=2, seed=5)
    epochs = []
    for epoch in range(3):
        s.set_epoch(epoch)
        epochs.append(list(s))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
    other = PKSampler(pids, mods, num_ids=4, num_instances=2, seed=6)
    assert list(other) != epochs[0]


def test_works_as_dataloader_batch_sampler():
    torch = pytest.importorskip("torch")
    pids, mods = make_data({pid: (2, 2) for pid in range(6)})
    sampler = PKSampler(pids, mods, num_ids=3, num_instances=2, seed=0)
    loader = torch.utils.data.DataLoader(list(range(len(pids))), batch_sampler=sampler)
    got = [b.tolist() for b in loader]
    assert got == list(sampler)


@pytest.mark.parametrize("n_ids,p", [(3, 4), (0, 2), (7, 8)])
def test_too_few_identities(n_ids, p):
    pids, mods = make_data({pid: (2, 2) for pid in range(n_ids)})
    pids += [-1, -1]  # distractors do not count
    mods += [0, 1]
    with pytest.raises(DataError) as exc:
        PKSampler(pids, mods, num_ids=p, num_instances=2)
    msg = str(exc.value)
    assert f"{n_ids} identities" in msg and f"num_ids={p}" in msg
    assert exc.value.hint and "data.sampler.num_ids" in exc.value.hint
    assert "fix:" in msg


# -- distributed (rank / world_size) ---------------------------------------------------------------


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_ranks_split_the_single_process_epoch(world):
    pids, mods = make_data({p: (3 + p % 4, 2 + p % 3) for p in range(12)})
    whole = PKSampler(pids, mods, num_ids=3, num_instances=2, seed=5)
    for epoch in (0, 1):
        whole.set_epoch(epoch)
        ref = list(whole)
        usable = ref[: len(ref) - len(ref) % world]
        parts = []
        for r in range(world):
            s = PKSampler(pids, mods, num_ids=3, num_instances=2, seed=5, rank=r, world_size=world)
            s.set_epoch(epoch)
            part = check_batches(s, pids, 3, 2)
            assert len(s) == len(part) == len(ref) // world  # per-rank length, equal on all ranks
            assert part == usable[r::world]  # rank r takes batches r, r+W, ...
            assert part == list(s)  # deterministic
            parts.append(part)
        flat = [tuple(b) for p in parts for b in p]
        assert len(set(flat)) == len(flat)  # disjoint across ranks
        assert sorted(flat) == sorted(tuple(b) for b in usable)  # union == the single-process epoch minus the tail


def test_distributed_sampler_checks_rank_and_batch_count():
    pids, mods = make_data({p: (2, 2) for p in range(4)})
    with pytest.raises(ValueError):
        PKSampler(pids, mods, num_ids=2, num_instances=2, rank=2, world_size=2)
    with pytest.raises(DataError, match="processes"):
        PKSampler(pids, mods, num_ids=2, num_instances=2, world_size=64)
