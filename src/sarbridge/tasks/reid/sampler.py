"""PK batch sampling: P identities x K images, optionally balancing modalities per identity."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from sarbridge.core.errors import DataError


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding ``num_ids * num_instances`` indices per batch.

    Each identity's images are shuffled and cut into groups of ``num_instances`` (sampling with
    replacement when an identity has fewer images). With ``balance_modalities`` each group
    alternates optical and SAR images as far as the identity has both, so cross-modal positives are
    always present for the triplet and alignment losses. Identities are drawn without
    replacement until fewer than ``num_ids`` have groups left. Deterministic given
    ``(seed, epoch)``; call :meth:`set_epoch` before each epoch.

    Distributed (``world_size > 1``): every rank builds the same global batch list from
    ``(seed, epoch)`` (:meth:`global_batches`), truncates it to a multiple of ``world_size`` and
    takes batches ``rank, rank + W, rank + 2W, ...``: each batch (whole identities, K images each)
    goes to exactly one rank, no batch is seen twice in an epoch, every rank gets the same number
    of batches, and ``len()`` is the per-rank count.

    Args:
        pids: identity of each dataset index (negative ids are skipped).
        modalities: modality index of each dataset index (0/1).
        num_ids: identities per batch (P).
        num_instances: images per identity (K).
        balance_modalities: alternate modalities inside each identity's group.
        seed: base seed.
        rank: this process's rank.
        world_size: number of processes sharing the epoch.
    """

    def __init__(
        self,
        pids: Sequence[int],
        modalities: Sequence[int],
        num_ids: int = 8,
        num_instances: int = 4,
        balance_modalities: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"PKSampler rank {rank} outside a world of {world_size} processes")
        self.pids = np.asarray(pids)
        self.modalities = np.asarray(modalities)
        self.num_ids = num_ids
        self.num_instances = num_instances
        self.balance = balance_modalities
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.index_by_pid: dict[int, np.ndarray] = {
            int(p): np.flatnonzero(self.pids == p) for p in np.unique(self.pids) if p >= 0
        }
        if len(self.index_by_pid) < num_ids:

            raise DataError(
                f"the training split has {len(self.index_by_pid)} identities, fewer than "
                f"data.sampler.num_ids={num_ids}",
                f"set --set data.sampler.num_ids={max(2, len(self.index_by_pid))} or add identities",
            )
        if world_size > 1 and len(self.global_batches()) < world_size:

            raise DataError(
                f"the training split gives {len(self.global_batches())} PK batches per epoch, fewer than "
                f"the {world_size} processes",
                "lower data.sampler.num_ids / num_instances or start fewer processes",
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups(self, rng: np.random.Generator, idx: np.ndarray) -> list[list[int]]:
        k = self.num_instances
        if len(idx) < k:
            idx = np.concatenate([idx, rng.choice(idx, size=k - len(idx), replace=True)])
        n_groups = len(idx) // k
        mods = [np.unique(idx[self.modalities[idx] == m]) for m in (0, 1)]
        if self.balance and len(mods[0]) and len(mods[1]):
            # alternate modalities; the smaller one is reshuffled and reused so every group has both
            queues = [list(rng.permutation(m)) for m in mods]
            turn = int(rng.integers(2))
            seq = []
            for _ in range(n_groups * k):
                if not queues[turn]:
                    queues[turn] = list(rng.permutation(mods[turn]))
                seq.append(int(queues[turn].pop()))
                turn = 1 - turn
        else:
            seq = [int(i) for i in rng.permutation(idx)]
        return [seq[i : i + k] for i in range(0, len(seq) - k + 1, k)]

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches of the current epoch, in order (the single-process epoch)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = {pid: self._groups(rng, idx) for pid, idx in self.index_by_pid.items()}
        available = [pid for pid in sorted(groups) if groups[pid]]
        batches = []
        while len(available) >= self.num_ids:
            chosen = rng.choice(available, size=self.num_ids, replace=False)
            batch: list[int] = []
            for pid in chosen:
                batch.extend(groups[int(pid)].pop(0))
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        return batches

    def _batches(self) -> list[list[int]]:
        batches = self.global_batches()
        if self.world_size == 1:
            return batches
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
