"""Training of the CMPC localisation model: coarse embedding, then the location-aware refiner.

Stage 1 (``coarse/``): the modality-aware encoder learns from (SAR query, target optical patch)
pairs with a cross-modal batch-hard triplet loss, plus the Wasserstein adversarial alignment
(a critic estimates ``W = E f(h_opt) - E f(h_sar)``, ``critic_steps`` critic updates per encoder
step, the encoder minimises ``lambda * W``) and, in ``end-to-end`` mode, the refiner's node loss on
in-batch candidates. Model selection: top-1 of the validation queries.

Stage 2 (``refine/``): post hoc, the refiner learns from the selected coarse model's retrieval
results on the training queries (top-k candidates as graph nodes), selected on validation top-1.

Both stages use the one :class:`~sarbridge.core.trainer.Trainer` (atomic checkpoints, resume,
logs). The run folder gets ``geo_model.pt`` (the inference bundle), ``metrics.json``,
``results.md``, ``retrieval.png`` and ``config.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from sarbridge.core.config import OptimConfig, config_to_dict
from sarbridge.core.distributed import current_context
from sarbridge.core.errors import DataError
from sarbridge.core.threads import loader_workers
from sarbridge.data.records import OPTICAL
from sarbridge.losses.metric import TripletLoss
from sarbridge.losses.wasserstein import WassersteinAlignment, WassersteinCritic
from sarbridge.nn.pretrained import warn_if_random_init
from sarbridge.tasks.geo.bundle import arch_of, build_encoder, build_refiner
from sarbridge.tasks.geo.config import GeoConfig
from sarbridge.tasks.geo.datasets import PatchImages, QueryPairs, embed_patches
from sarbridge.tasks.geo.evaluate import coarse_search, evaluate_localisation, patch_size_m
from sarbridge.tasks.geo.model import GeoEmbeddingNet
from sarbridge.tasks.geo.patches import GeoQuery, LocalisationData
from sarbridge.tasks.geo.refine import RefinementInput, gather_candidates, refinement_loss


def area_views(data: LocalisationData) -> tuple[LocalisationData, LocalisationData]:
    """``(train_view, test_view)``: the references each split searches.

    Same-area: every split searches the whole map. Cross-area: training and validation queries
    search the training area's references, test queries the (disjoint) test area's.
    """
    regions = {r.region for r in data.references}
    if regions <= {""}:
        return data, data
    train = data.with_references([r.index for r in data.references if r.region == "train"])
    test = data.with_references([r.index for r in data.references if r.region == "test"])
    return train, test


class GeoTrainModel(nn.Module):
    """Everything the coarse stage trains or checkpoints: encoder, critic (frozen outside its own
    updates, so the encoder's optimiser skips it) and, end to end, the refiner.

    :meth:`forward` is the training forward (run through DistributedDataParallel under torchrun):
    the critic is not part of it (it has its own optimiser and gradient averaging)."""

    def __init__(self, encoder: GeoEmbeddingNet, critic: nn.Module | None, refiner: nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.critic = critic
        self.refiner = refiner

    def forward(self, images: torch.Tensor, modality: torch.Tensor, targets: torch.Tensor | None = None,
                ref_xy: torch.Tensor | None = None, top_k: int = 0) -> dict[str, torch.Tensor]:
        """Embeddings of a batch ``[optical; SAR]`` (the first ``len(targets)`` rows optical).

        Args:
            images: ``(2n, 3, H, W)``: n optical patches, then their n SAR queries.
            modality: ``(2n,)`` modality indices (0 optical, 1 SAR).
            targets: ``(n,)`` reference index of each pair (needed for the end-to-end refinement).
            ref_xy: ``(n, 2)`` target positions (end-to-end refinement).
            top_k: in-batch candidates of the end-to-end refinement.

        Returns:
            ``embedding`` (float32) and, with a refiner and ``targets``, ``refine`` (its loss).
        """
        out = {"embedding": self.encoder(images, modality)["embedding"].float()}
        if self.refiner is not None and targets is not None and ref_xy is not None:
            n = targets.shape[0]
            e_opt, e_sar = out["embedding"][:n], out["embedding"][n:]
            out["refine"] = in_batch_refinement(self.refiner, e_sar, e_opt, targets, ref_xy, top_k)
        return out


def in_batch_refinement(refiner: nn.Module, e_sar: torch.Tensor, e_opt: torch.Tensor, targets: torch.Tensor,
                        ref_xy: torch.Tensor, top_k: int) -> torch.Tensor:
    """End-to-end refinement loss: each query's candidates are the batch's optical patches ranked by
    similarity (gradients reach the encoder through the node features)."""
    q, g = F.normalize(e_sar, dim=1), F.normalize(e_opt, dim=1)
    sims = q @ g.t()
    k = min(top_k, g.shape[0])
    top_s, top_i = sims.topk(k, dim=1)
    cand_t = targets[top_i]
    hit = cand_t == targets[:, None]
    target_pos = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(targets, -1))
    logits = refiner(q, g[top_i], ref_xy[top_i], top_s)
    return refinement_loss(logits, target_pos)


class GeoCoarseTask:
    """Stage 1: triplet + Wasserstein (+ end-to-end refinement) on query/target pairs."""

    name = "geo-coarse"
    train_module: nn.Module | None = None

    def __init__(self, cfg: GeoConfig, train_view: LocalisationData, train: Sequence[GeoQuery],
                 val: Sequence[GeoQuery], progress: bool = True) -> None:
        if len(train) < 2:
            raise DataError(f"localisation training needs at least 2 training queries, got {len(train)}",
                            "use a larger map/strip, more queries (data.queries) or a larger data.fractions[0]")
        self.cfg, self.view, self.progress = cfg, train_view, progress
        self.train_q, self.val_q = list(train), list(val)
        self.spec = cfg.data.spec()
        self.patch_m = patch_size_m(train_view)
        encoder = build_encoder(cfg)
        warn_if_random_init(encoder, cfg.model.backbone, cfg.model.pretrained)
        w = cfg.loss.wasserstein
        critic = WassersteinCritic(cfg.model.embed_dim, hidden=w.hidden, num_hidden_layers=w.hidden_layers) if w.enabled else None
        e2e = cfg.refine.enabled and cfg.refine.mode == "end-to-end"
        refiner = build_refiner(cfg, self.patch_m) if e2e else None
        self.model = GeoTrainModel(encoder, critic, refiner)
        for p in critic.parameters() if critic is not None else ():
            p.requires_grad_(False)
        self.alignment = WassersteinAlignment(critic, mode=w.mode, gamma=w.gamma, clip=w.clip, critic_steps=w.critic_steps,
                                              critic_lr=w.critic_lr, weight=w.weight) if critic is not None else None
        self.triplet = TripletLoss(margin=cfg.loss.triplet_margin, distance="euclidean", normalize=True)
        d = cfg.data  # with data.cache_dir the patches live in memory-mapped disk caches (built in preload)
        self.refs = PatchImages(train_view.references, OPTICAL, self.spec, d.cache, d.cache_dir, d.num_workers)
        self.pairs = QueryPairs(self.train_q, self.refs, train_view.reference_xy(), self.spec, d.cache, d.cache_dir,
                                d.num_workers)
        self.val_sar = PatchImages(self.val_q, "sar", self.spec, d.cache, d.cache_dir, d.num_workers) if self.val_q else None
        workers = loader_workers(cfg.data.num_workers)
        ctx = current_context()
        self.dist_sampler: DistributedSampler[Any] | None = None
        if ctx.distributed:  # each rank a disjoint share of the pairs; same order on all ranks per epoch
            self.dist_sampler = DistributedSampler(self.pairs, num_replicas=ctx.world_size, rank=ctx.rank,
                                                   shuffle=True, seed=cfg.seed, drop_last=True)
            bs = min(cfg.data.batch_size, len(self.dist_sampler))
            if bs < 2:
                raise DataError(f"{len(self.train_q)} training queries over {ctx.world_size} processes leave "
                                f"{len(self.dist_sampler)} per process", "use more queries or fewer processes")
        else:
            bs = min(cfg.data.batch_size, len(self.train_q))
        self.loader = DataLoader(self.pairs, batch_size=bs, shuffle=self.dist_sampler is None,
                                 sampler=self.dist_sampler, drop_last=True, num_workers=workers,
                                 persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def preload(self) -> None:
        """Read every patch once (fills the caches; a bad patch stops the run before training).

        With ``data.cache_dir`` this builds or opens the disk caches (rank 0 builds under ``torchrun``).
        """
        if self.cfg.data.cache or self.cfg.data.cache_dir is not None:
            self.refs.preload("reading reference patches", self.progress)
            self.pairs.sar.preload("reading training queries", self.progress)
            if self.val_sar is not None:
                self.val_sar.preload("reading validation queries", self.progress)

    def train_batches(self, epoch: int) -> DataLoader:
        if self.dist_sampler is not None:
            self.dist_sampler.set_epoch(epoch)
        return self.loader

    def training_step(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        sar = batch["sar"].to(device, non_blocking=True)
        opt = batch["optical"].to(device, non_blocking=True)
        targets = batch["target"].to(device)
        n = opt.shape[0]
        modality = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)]).to(device)
        net = self.train_module if self.train_module is not None else self.model
        e2e = self.model.refiner is not None
        out = net(torch.cat([opt, sar]), modality, targets if e2e else None,
                  batch["ref_xy"].to(device) if e2e else None, self.cfg.refine.top_k)
        emb = out["embedding"]
        e_opt, e_sar = emb[:n], emb[n:]
        triplet = 0.5 * (self.triplet(e_sar, targets, e_opt, targets) + self.triplet(e_opt, targets, e_sar, targets))
        loss = self.cfg.loss.triplet_weight * triplet
        logs: dict[str, torch.Tensor] = {"triplet": triplet.detach()}
        if self.alignment is not None:
            h_opt, h_sar = F.normalize(e_opt, dim=1), F.normalize(e_sar, dim=1)
            critic_logs = self.alignment.critic_update(h_opt.detach(), h_sar.detach())
            w_loss = self.alignment.encoder_loss(h_opt, h_sar)
            loss = loss + w_loss
            logs["wasserstein"] = w_loss.detach() / max(self.cfg.loss.wasserstein.weight, 1e-12)
            for k, v in critic_logs.items():
                logs[f"critic_{k}"] = torch.tensor(float(v))
        if "refine" in out:
            loss = loss + self.cfg.refine.e2e_weight * out["refine"]
            logs["refine"] = out["refine"].detach()
        return {"loss": loss, **logs}

    def validate(self, epoch: int, device: torch.device) -> dict[str, float] | None:
        if self.val_sar is None:
            return None
        enc = self.model.encoder
        bs = self.cfg.eval.batch_size
        ref_emb = embed_patches(enc, self.refs, device, bs)
        q_emb = embed_patches(enc, self.val_sar, device, bs)
        metrics, _ = evaluate_localisation(self.view, self.val_q, ref_emb, q_emb, top_k=min(20, len(ref_emb)))
        c = metrics["coarse"]
        return {"top1": c["top1"], "top5": c["top5"], "mAP": c["mAP"], "median_err_m": c["median_err_m"],
                "selection": c["top1"] + c["mAP"] / 1000.0}

    def checkpoint_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"config": config_to_dict(self.cfg), "preprocess": self.spec.to_dict(),
                                 "arch": arch_of(self.cfg), "patch_size_m": self.patch_m}
        if self.alignment is not None:
            extra["critic_optimizer"] = self.alignment.state_dict()
        return extra

    def restore(self, state: dict[str, Any]) -> None:
        """Resume what the trainer does not own: the critic's optimiser."""
        if self.alignment is not None and state.get("critic_optimizer") is not None:
            self.alignment.load_state_dict(state["critic_optimizer"])


class GeoRefineTask:
    """Stage 2: the location-aware graph network on the coarse model's top-k (node classification)."""

    name = "geo-refine"
    train_module: nn.Module | None = None

    def __init__(self, cfg: GeoConfig, refiner: nn.Module, train_input: Any, val_input: Any | None) -> None:
        self.cfg, self.model = cfg, refiner
        self.train_input, self.val_input = train_input, val_input
        self.n = int(train_input.query_emb.shape[0])

    def train_batches(self, epoch: int) -> list[torch.Tensor]:
        """Shuffled mini-batches of graph indices; under torchrun every rank draws the same
        permutation (seeded by ``(seed, epoch)``), the batch list is truncated to a multiple of the
        number of processes and rank ``r`` takes batches ``r, r + W, ...``."""
        bs = self.cfg.refine.batch_size
        ctx = current_context()
        if not ctx.distributed:
            perm = torch.randperm(self.n)
            return [perm[i:i + bs] for i in range(0, self.n, bs)]
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch))
        batches = [perm[i:i + bs] for i in range(0, self.n, bs)]
        usable = len(batches) - len(batches) % ctx.world_size
        if usable == 0:
            raise DataError(f"{self.n} refinement graphs make {len(batches)} batches, fewer than the "
                            f"{ctx.world_size} processes", "lower refine.batch_size or start fewer processes")
        return batches[ctx.rank:usable:ctx.world_size]

    def _logits(self, inp: Any, idx: torch.Tensor | None, device: torch.device, net: nn.Module | None = None) -> torch.Tensor:
        parts = (inp.query_emb, inp.cand_emb, inp.cand_xy, inp.coarse_scores)
        if idx is not None:
            parts = tuple(p[idx] for p in parts)
        return (net if net is not None else self.model)(*(p.to(device) for p in parts))

    def training_step(self, batch: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        logits = self._logits(self.train_input, batch, device, self.train_module)
        loss = refinement_loss(logits.float(), self.train_input.target_pos[batch].to(device))
        return {"loss": loss}

    @torch.no_grad()
    def validate(self, epoch: int, device: torch.device) -> dict[str, float] | None:
        if self.val_input is None:
            return None
        logits = self._logits(self.val_input, None, device).float().cpu()
        tp = self.val_input.target_pos
        top1 = float((logits.argmax(1) == tp).float().mean() * 100.0)
        coarse = float((tp == 0).float().mean() * 100.0)
        return {"top1": top1, "coarse_top1": coarse, "selection": top1}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"config": config_to_dict(self.cfg)}


def graphs_from_embeddings(q_emb: torch.Tensor, ref_emb: torch.Tensor, ref_xy: np.ndarray, targets: torch.Tensor,
                           top_k: int) -> Any:
    """Coarse retrieval of query embeddings turned into refinement graphs (:class:`RefinementInput`)."""
    scores, ranked = coarse_search(ref_emb, q_emb, min(top_k, len(ref_emb)))
    return gather_candidates(q_emb, ref_emb, torch.as_tensor(ref_xy, dtype=torch.float32), torch.as_tensor(ranked),
                             torch.as_tensor(scores, dtype=torch.float32), targets)


def perturb(q_emb: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Unit embeddings plus Gaussian noise of expected norm ``noise`` (dimension-free), re-normalised."""
    if noise <= 0:
        return q_emb
    eps = torch.randn(q_emb.shape, generator=generator) / q_emb.shape[1] ** 0.5
    return F.normalize(q_emb + noise * eps, dim=1)


def noisy_graphs(q_emb: torch.Tensor, ref_emb: torch.Tensor, ref_xy: np.ndarray, targets: torch.Tensor, top_k: int,
                 noise: float, draws: int, seed: int) -> Any:
    """``draws`` sets of graphs from query embeddings perturbed by :func:`perturb`, concatenated."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for _ in range(max(1, draws) if noise > 0 else 1):
        noisy = perturb(q_emb, noise, gen)
        parts.append(graphs_from_embeddings(noisy, ref_emb, ref_xy, targets, top_k))
    if len(parts) == 1:
        return parts[0]
    fields = ("query_emb", "cand_emb", "cand_xy", "coarse_scores", "target_pos", "cand_index")
    return RefinementInput(**{f: torch.cat([getattr(p, f) for p in parts]) for f in fields})


def calibrate_noise(q_emb: torch.Tensor, ref_emb: torch.Tensor, targets: torch.Tensor, val_top1: float,
                    seed: int = 0,
                    grid: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)) -> float:
    """The smallest embedding noise at which the training queries' coarse top-1 (percent) falls to
    the validation queries' ``val_top1``.

    A coarse model retrieves its own training queries almost perfectly, so graphs built from them
    would teach the refiner "always keep rank 1". Perturbing the training embeddings until their
    retrieval is as imperfect as on held-out queries gives graphs that look like test graphs.
    """
    for sigma in grid:
        noisy = perturb(q_emb, sigma, torch.Generator().manual_seed(seed))
        _, ranked = coarse_search(ref_emb, noisy, 1)
        top1 = float((torch.as_tensor(ranked[:, 0]) == targets).float().mean() * 100.0)
        if top1 <= val_top1:
            return float(sigma)
    return float(grid[-1])


def refine_optim(cfg: GeoConfig) -> OptimConfig:
    """AdamW with a short warm-up and cosine decay for the small graph network."""
    r = cfg.refine
    return OptimConfig(name="adamw", lr=r.lr, weight_decay=r.weight_decay, warmup_epochs=min(2, r.epochs - 1),
                       warmup_factor=0.1, min_lr_factor=0.01, epochs=r.epochs, grad_clip=5.0)
