"""CMPC's location-aware graph refinement of the coarse SAR -> optical-map retrieval.

After coarse retrieval, the top-``K`` reference patches of one SAR query form a small graph:

* **nodes** are the candidates; a node's input feature is built from the query embedding ``q``
  and the candidate embedding ``c`` as ``[q || c || q*c || |q-c| || s]`` (``s`` the coarse
  similarity), projected to ``hidden`` dimensions, plus an MLP embedding of the candidate's map
  position *relative to the top-1 candidate* (so the graph is translation-invariant) divided by a
  spacing scale (so it is unit-free);
* **edges** link every node to its ``edge_k`` nearest *other* candidates by map distance ``d``,
  weighted ``exp(-d / sigma)`` (:func:`build_candidate_graph`) and carrying the scaled map offset
  between the two candidates; the self-loop is added inside :class:`GraphAttentionLayer`;
* a stack of attention message-passing layers scores the nodes (:class:`LocationRefiner`), trained
  with a node-classification cross-entropy where the true reference is the positive node
  (:func:`refinement_loss`).

:func:`refine_positions` turns the node logits into the refined candidate order, a refined map
position (softmax-weighted centroid of the best nodes) and a confidence. :func:`gather_candidates`
turns coarse retrieval results (ranked reference indices + scores) into a
:class:`RefinementInput` batch.

Everything here is pure torch: no device choice (outputs follow the inputs' device), no randomness
besides dropout and parameter initialisation (seed torch for determinism).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GraphAttentionLayer",
    "LocationRefiner",
    "RefinedPositions",
    "RefinementInput",
    "build_candidate_graph",
    "gather_candidates",
    "refine_positions",
    "refinement_loss",
    "relative_coordinates",
]

Scale = float | torch.Tensor


def _as_float_xy(cand_xy: torch.Tensor, name: str = "cand_xy") -> torch.Tensor:
    """Check a ``(B, K, 2)`` coordinate tensor and return it in a floating dtype."""
    if cand_xy.dim() != 3 or cand_xy.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, K, 2), got {tuple(cand_xy.shape)}")
    if cand_xy.shape[1] < 1:
        raise ValueError(f"{name} needs at least one candidate per graph (K >= 1)")
    if not cand_xy.is_floating_point():
        cand_xy = cand_xy.to(torch.get_default_dtype())
    return cand_xy


def _widen(x: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 to float32 (for softmax and losses); other dtypes unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _pairwise_distances(cand_xy: torch.Tensor) -> torch.Tensor:
    """``(B, K, K)`` Euclidean distances, by explicit differences (exact for map coordinates)."""
    diff = cand_xy.unsqueeze(2) - cand_xy.unsqueeze(1)
    return diff.pow(2).sum(-1).sqrt()


def _per_graph_scale(value: Scale, batch: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """A user-given positive scalar or ``(B,)`` tensor as a ``(B,)`` tensor like ``like``."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a number or a ({batch},) tensor, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return t


def _median_positive(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-row median of ``values[valid & values > 0]`` (lower median); 1 for rows with none."""
    keep = valid & (values > 0) & torch.isfinite(values)
    masked = torch.where(keep, values, torch.full_like(values, float("nan")))
    med = masked.flatten(1).nanmedian(dim=1).values
    return torch.where(torch.isnan(med), torch.ones_like(med), med)


def build_candidate_graph(
    cand_xy: torch.Tensor, edge_k: int = 5, sigma: Scale | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial k-nearest-neighbour graph over the candidates of each query.

    Every node is linked to its ``E = min(edge_k, K - 1)`` nearest *other* candidates by Euclidean
    map distance ``d`` (ties broken by the lower candidate position), with edge weight
    ``exp(-d / sigma)``. No self-loops: :class:`GraphAttentionLayer` adds the node itself.

    Args:
        cand_xy: (B, K, 2) candidate map coordinates in metres.
        edge_k: neighbours per node (>= 0; clamped to ``K - 1``).
        sigma: distance scale of the edge weights in metres, a number or a (B,) tensor, > 0.
            ``None``: per graph, the median (the lower one for an even count, as
            ``torch.nanmedian``) of the non-zero pairwise candidate distances; 1 for a graph whose
            candidates all coincide (whose weights are then all 1 anyway).

    Returns:
        ``(neighbours, weights)``: (B, K, E) long candidate positions sorted by distance, and the
        (B, K, E) weights in ``(0, 1]`` (floating dtype of ``cand_xy``).

    Raises:
        ValueError: bad shapes, ``edge_k < 0`` or a non-positive ``sigma``.
    """
    cand_xy = _as_float_xy(cand_xy)
    if edge_k < 0:
        raise ValueError(f"edge_k must be >= 0, got {edge_k}")
    b, k, _ = cand_xy.shape
    e = min(edge_k, k - 1)
    dist = _pairwise_distances(cand_xy)
    if sigma is None:
        upper = torch.ones(k, k, dtype=torch.bool, device=dist.device).triu(1).expand(b, k, k)
        sig = _median_positive(dist, upper)
    else:
        sig = _per_graph_scale(sigma, b, dist, "sigma")
    eye = torch.eye(k, dtype=torch.bool, device=dist.device)
    no_self = dist.masked_fill(eye, float("inf"))
    order = torch.sort(no_self, dim=-1, stable=True).indices[..., :e]
    near = no_self.gather(-1, order)
    weights = torch.exp(-near / sig.view(b, 1, 1))
    return order, weights


def relative_coordinates(
    cand_xy: torch.Tensor, scale: Scale | None = None, anchor: torch.Tensor | None = None
) -> torch.Tensor:
    """Candidate coordinates relative to the top-1 candidate, in units of ``scale``.

    Subtracting the anchor's position makes the coordinate embedding translation-invariant;
    dividing by ``scale`` makes it unit-free.

    Args:
        cand_xy: (B, K, 2) map coordinates in metres.
        scale: metres per unit, a number (e.g. the reference patch size or grid stride) or a (B,)
            tensor, > 0. ``None``: per graph, the median over candidates of the distance to the
            nearest other candidate at a non-zero distance (1 when there is none, e.g. ``K = 1``).
        anchor: (B,) long position of the top-1 candidate of each graph; ``None`` = position 0
            (the candidates are in coarse order).

    Returns:
        (B, K, 2) relative coordinates (the anchor at the origin), dtype of ``cand_xy``.

    Raises:
        ValueError: bad shapes, an anchor out of range or a non-positive ``scale``.
    """
    cand_xy = _as_float_xy(cand_xy)
    b, k, _ = cand_xy.shape
    if anchor is None:
        origin = cand_xy[:, :1]
    else:
        anchor = torch.as_tensor(anchor, device=cand_xy.device).long()
        if anchor.shape != (b,):
            raise ValueError(f"anchor must have shape ({b},), got {tuple(anchor.shape)}")
        if bool(((anchor < 0) | (anchor >= k)).any()):
            raise ValueError(f"anchor positions must lie in [0, {k}), got {anchor.tolist()}")
        origin = cand_xy.gather(1, anchor.view(b, 1, 1).expand(b, 1, 2))
    if scale is None:
        dist = _pairwise_distances(cand_xy)
        eye = torch.eye(k, dtype=torch.bool, device=dist.device)
        # The nearest candidate at a non-zero distance (duplicates do not count as spacing).
        nn_dist = dist.masked_fill(eye | (dist <= 0), float("inf")).min(-1).values  # (B, K)
        sc = _median_positive(nn_dist, torch.isfinite(nn_dist))
    else:
        sc = _per_graph_scale(scale, b, cand_xy, "scale")
    return (cand_xy - origin) / sc.view(b, 1, 1)


def _gather_nodes(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[b, i, m] = x[b, index[b, i, m]]`` for x (B, K, D) and index (B, K, M) -> (B, K, M, D)."""
    b, k, m = index.shape
    d = x.shape[-1]
    flat = index.reshape(b, k * m, 1).expand(b, k * m, d)
    return x.gather(1, flat).view(b, k, m, d)


class GraphAttentionLayer(nn.Module):
    """Multi-head attention message passing over each node's spatial neighbours and itself.

    For node ``i`` with neighbours ``N(i)``, edge weights ``w_ij`` (``w_ii = 1``) and optional edge
    features ``r_ij`` (``r_ii = 0``), per head::

        k_ij = W_k h_j + U_k r_ij,   v_ij = W_v h_j + U_v r_ij
        a_ij = softmax_{j in {i} u N(i)} ( <W_q h_i, k_ij> / sqrt(d_head) + log w_ij )
        m_i  = sum_j a_ij v_ij

    then ``h <- LayerNorm(h + W_o m)`` and ``h <- LayerNorm(h + FFN(h))``. With
    ``use_attention=False`` the coefficients are the normalised edge weights
    ``a_ij = w_ij / sum_j w_ij`` (a plain weighted mean, for ablation). Neighbours are gathered in
    one batched indexing operation (no loop over nodes).

    Args:
        dim: node feature size (divisible by ``heads``).
        heads: attention heads.
        dropout: dropout on the attention coefficients, the message and the FFN output.
        use_attention: learned attention (True) or the edge-weighted mean (False).
        ffn_mult: hidden width of the feed-forward block, in multiples of ``dim``.
        edge_dim: size of the edge features ``r_ij`` (0: none, ``U_k = U_v = 0``).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        dropout: float = 0.0,
        use_attention: bool = True,
        ffn_mult: int = 2,
        edge_dim: int = 0,
    ) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        if edge_dim < 0:
            raise ValueError(f"edge_dim must be >= 0, got {edge_dim}")
        self.dim = dim
        self.edge_dim = edge_dim
        self.heads = heads
        self.head_dim = dim // heads
        self.use_attention = use_attention
        self.query = nn.Linear(dim, dim) if use_attention else None
        self.key = nn.Linear(dim, dim) if use_attention else None
        self.value = nn.Linear(dim, dim)
        self.edge_key = nn.Linear(edge_dim, dim, bias=False) if edge_dim and use_attention else None
        self.edge_value = nn.Linear(edge_dim, dim, bias=False) if edge_dim else None
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.attn_drop = nn.Dropout(dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        h: torch.Tensor,
        neighbours: torch.Tensor,
        weights: torch.Tensor,
        edge_feats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Update node features.

        Args:
            h: (B, K, dim) node features.
            neighbours: (B, K, E) long neighbour positions (no self; E may be 0).
            weights: (B, K, E) positive edge weights.
            edge_feats: (B, K, E, edge_dim) features of the edges ``i -> neighbours[i]`` (e.g. the
                relative map offset), required when ``edge_dim > 0``; the self edge gets zeros.

        Returns:
            (B, K, dim) updated node features.
        """
        b, k, d = h.shape
        if d != self.dim:
            raise ValueError(f"node features have size {d}, the layer expects {self.dim}")
        if neighbours.shape[:2] != (b, k) or weights.shape != neighbours.shape:
            raise ValueError(
                f"neighbours {tuple(neighbours.shape)} and weights {tuple(weights.shape)} must both be "
                f"({b}, {k}, E)"
            )
        nh, hd = self.heads, self.head_dim
        self_idx = torch.arange(k, device=h.device).view(1, k, 1).expand(b, k, 1)
        index = torch.cat([self_idx, neighbours.long()], dim=-1)  # (B, K, M), M = E + 1
        m = index.shape[-1]
        w = torch.cat([torch.ones(b, k, 1, dtype=h.dtype, device=h.device), weights.to(h.dtype)], dim=-1)
        values = _gather_nodes(self.value(h), index)  # (B, K, M, dim)
        edge = None
        if self.edge_dim:
            if edge_feats is None or edge_feats.shape != (*neighbours.shape, self.edge_dim):
                got = None if edge_feats is None else tuple(edge_feats.shape)
                raise ValueError(f"edge_feats must have shape {(*neighbours.shape, self.edge_dim)}, got {got}")
            edge = torch.cat([edge_feats.new_zeros(b, k, 1, self.edge_dim), edge_feats], dim=2).to(h.dtype)
            assert self.edge_value is not None
            values = values + self.edge_value(edge)
        values = values.view(b, k, m, nh, hd)
        if self.use_attention:
            assert self.query is not None and self.key is not None
            q = self.query(h).view(b, k, 1, nh, hd)
            keys = _gather_nodes(self.key(h), index)
            if edge is not None:
                assert self.edge_key is not None
                keys = keys + self.edge_key(edge)
            keys = keys.view(b, k, m, nh, hd)
            bias = torch.log(w.clamp_min(torch.finfo(w.dtype).tiny)).unsqueeze(-1)  # (B, K, M, 1)
            logits = (q * keys).sum(-1) / math.sqrt(hd) + bias  # (B, K, M, H)
            attn = torch.softmax(_widen(logits), dim=2).to(values.dtype)
        else:
            attn = (w / w.sum(-1, keepdim=True)).unsqueeze(-1).expand(b, k, m, nh)
        attn = self.attn_drop(attn)
        message = (attn.unsqueeze(-1) * values).sum(2).reshape(b, k, d)
        h = self.norm1(h + self.drop(self.out(message)))
        return self.norm2(h + self.drop(self.ffn(h)))


class LocationRefiner(nn.Module):
    """Location-aware graph network scoring the coarse top-K candidates of each query.

    Node input: ``Linear-GELU-Linear([q || c || q*c || |q-c| || s])`` with ``s`` the coarse score,
    plus (``use_coords``) ``MLP(relative_coordinates(cand_xy))`` relative to the top-1 candidate
    (the one with the highest ``coarse_scores``, or position 0 when no scores are given), then a
    LayerNorm, ``layers`` :class:`GraphAttentionLayer` blocks over :func:`build_candidate_graph`
    edges, and an MLP head giving one logit per node.

    With ``use_coords`` the messages are location-aware as well: every edge ``i -> j`` carries
    ``r_ij = (p_j - p_i, |p_j - p_i|)`` with ``p`` the scaled relative coordinates, added to the
    keys and values. This lets a node compare its own position with its neighbours' (e.g. notice
    that it sits in the middle of a spatial cluster of similar-looking candidates, as the true
    reference usually does), which the absolute coordinate embedding alone learns poorly.
    ``use_coords=False`` drops both; the edge weights still follow map distance.

    The logits are equivariant to permuting the candidates (together with their scores and
    coordinates), invariant to translating all coordinates and, with the default ``sigma`` and
    ``coord_scale``, to scaling them.

    Args:
        embed_dim: size D of the query / candidate embeddings.
        hidden: node feature size (divisible by ``heads``).
        layers: message-passing layers (>= 0).
        heads: attention heads.
        edge_k: spatial neighbours per node.
        sigma: edge-weight distance scale in metres (``None``: per-graph median distance).
        use_coords: add the coordinate embedding.
        use_attention: learned attention; False = edge-weighted mean aggregation (ablation).
        dropout: dropout inside the layers.
        coord_scale: metres per coordinate unit, e.g. the patch size (``None``: per-graph median
            nearest-neighbour spacing).
        residual: add ``score_scale * z(coarse score)`` (per-graph standardised) to the logits and
            start the head at zero, so an untrained refiner keeps the coarse order exactly and
            training learns corrections to it (model selection can then never do worse than the
            coarse ranking on validation).
    """

    def __init__(
        self,
        embed_dim: int,
        hidden: int = 256,
        layers: int = 2,
        heads: int = 4,
        edge_k: int = 5,
        sigma: float | None = None,
        use_coords: bool = True,
        use_attention: bool = True,
        dropout: float = 0.0,
        coord_scale: float | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if layers < 0 or edge_k < 0:
            raise ValueError(f"layers and edge_k must be >= 0, got {layers} and {edge_k}")
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if coord_scale is not None and not coord_scale > 0:
            raise ValueError(f"coord_scale must be > 0, got {coord_scale}")
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.edge_k = edge_k
        self.sigma = sigma
        self.use_coords = use_coords
        self.coord_scale = coord_scale
        self.node_proj = nn.Sequential(nn.Linear(4 * embed_dim + 1, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.coord_embed = (
            nn.Sequential(nn.Linear(2, hidden), nn.GELU(), nn.Linear(hidden, hidden)) if use_coords else None
        )
        self.input_norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(
            GraphAttentionLayer(
                hidden, heads=heads, dropout=dropout, use_attention=use_attention, edge_dim=3 if use_coords else 0
            )
            for _ in range(layers)
        )
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.residual = residual
        if residual:  # start from the coarse order exactly; training learns corrections to it
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
            self.score_scale = nn.Parameter(torch.tensor(1.0))

    def forward(
        self,
        query_emb: torch.Tensor,
        cand_emb: torch.Tensor,
        cand_xy: torch.Tensor,
        coarse_scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score the candidates.

        Args:
            query_emb: (B, D) query embeddings.
            cand_emb: (B, K, D) candidate (reference) embeddings.
            cand_xy: (B, K, 2) candidate map coordinates in metres.
            coarse_scores: (B, K) coarse query-candidate similarities (higher = better).
                ``None``: the cosine similarity of ``query_emb`` and ``cand_emb``, and the top-1
                anchor of the coordinates is position 0.

        Returns:
            (B, K) node logits.
        """
        if query_emb.dim() != 2 or cand_emb.dim() != 3:
            raise ValueError(
                f"query_emb must be (B, D) and cand_emb (B, K, D), got {tuple(query_emb.shape)} and "
                f"{tuple(cand_emb.shape)}"
            )
        b, k, d = cand_emb.shape
        if query_emb.shape != (b, d) or d != self.embed_dim:
            raise ValueError(
                f"query_emb {tuple(query_emb.shape)} and cand_emb {tuple(cand_emb.shape)} do not match "
                f"(B, D) / (B, K, D) with D = {self.embed_dim}"
            )
        cand_xy = _as_float_xy(cand_xy)
        if cand_xy.shape[:2] != (b, k):
            raise ValueError(f"cand_xy must have shape ({b}, {k}, 2), got {tuple(cand_xy.shape)}")
        q = query_emb.unsqueeze(1).expand(b, k, d)
        if coarse_scores is None:
            scores = F.cosine_similarity(q, cand_emb, dim=-1)
            anchor = None
        else:
            if coarse_scores.shape != (b, k):
                raise ValueError(f"coarse_scores must have shape ({b}, {k}), got {tuple(coarse_scores.shape)}")
            scores = coarse_scores
            anchor = coarse_scores.detach().argmax(dim=1)
        score = scores.unsqueeze(-1).to(cand_emb.dtype)
        x = torch.cat([q, cand_emb, q * cand_emb, (q - cand_emb).abs(), score], dim=-1)
        h = self.node_proj(x)
        rel = None
        if self.coord_embed is not None:
            rel = relative_coordinates(cand_xy, scale=self.coord_scale, anchor=anchor)
            h = h + self.coord_embed(rel.to(h.dtype))
        h = self.input_norm(h)
        if len(self.layers):
            neighbours, weights = build_candidate_graph(cand_xy, self.edge_k, self.sigma)
            edge = None
            if rel is not None:
                offset = _gather_nodes(rel, neighbours) - rel.unsqueeze(2)  # (B, K, E, 2)
                edge = torch.cat([offset, offset.norm(dim=-1, keepdim=True)], dim=-1).to(h.dtype)
            for layer in self.layers:
                h = layer(h, neighbours, weights, edge)
        out = self.head(h).squeeze(-1)
        if self.residual:
            s = scores.to(out.dtype)
            z = (s - s.mean(dim=1, keepdim=True)) / s.std(dim=1, keepdim=True).clamp_min(1e-6) if k > 1 else s * 0
            out = out + self.score_scale * z
        return out


def refinement_loss(
    logits: torch.Tensor, target_pos: torch.Tensor, soft_targets: torch.Tensor | None = None
) -> torch.Tensor:
    """Node-classification cross-entropy of the refiner.

    A graph is trained with a one-hot target on ``target_pos`` or, when ``soft_targets`` is given
    and its row has positive mass, with that row re-normalised to sum to 1 (e.g. overlap weights
    that also credit near-misses); the loss is ``-sum_k t_k log_softmax(logits)_k`` averaged over
    the graphs that have a target. Graphs with ``target_pos == -1`` (true reference not among the
    candidates) and no soft mass are skipped; with none left, the result is a zero still connected
    to ``logits`` (so ``backward`` works and gives zero gradients).

    Args:
        logits: (B, K) node logits.
        target_pos: (B,) long position of the true node in ``0..K-1``, or -1.
        soft_targets: optional (B, K) non-negative target weights.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes, positions outside ``-1..K-1`` or negative soft targets.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K), got {tuple(logits.shape)}")
    b, k = logits.shape
    target_pos = torch.as_tensor(target_pos, device=logits.device).long()
    if target_pos.shape != (b,):
        raise ValueError(f"target_pos must have shape ({b},), got {tuple(target_pos.shape)}")
    if bool(((target_pos < -1) | (target_pos >= k)).any()):
        raise ValueError(f"target_pos must lie in -1..{k - 1}, got {target_pos.tolist()}")
    hard = target_pos >= 0
    target = F.one_hot(target_pos.clamp_min(0), k).to(logits.dtype) * hard.unsqueeze(1).to(logits.dtype)
    valid = hard
    if soft_targets is not None:
        if soft_targets.shape != (b, k):
            raise ValueError(f"soft_targets must have shape ({b}, {k}), got {tuple(soft_targets.shape)}")
        if bool((soft_targets < 0).any()):
            raise ValueError("soft_targets must be non-negative")
        soft = soft_targets.to(device=logits.device, dtype=logits.dtype)
        mass = soft.sum(1, keepdim=True)
        has_soft = mass.squeeze(1) > 0
        target = torch.where(has_soft.unsqueeze(1), soft / mass.clamp_min(torch.finfo(soft.dtype).tiny), target)
        valid = hard | has_soft
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(_widen(logits[valid]), dim=1)
    return -(target[valid].to(logp.dtype) * logp).sum(1).mean()


class RefinedPositions(NamedTuple):
    """Output of :func:`refine_positions` (unpacks as ``order, xy, confidence``)."""

    order: torch.Tensor
    """(B, K) long candidate positions, best refined score first."""
    xy: torch.Tensor
    """(B, 2) refined map position."""
    confidence: torch.Tensor
    """(B,) softmax probability of the best node."""


def refine_positions(
    logits: torch.Tensor, cand_xy: torch.Tensor, top: int = 3, temperature: float = 1.0
) -> RefinedPositions:
    """Refined order, position and confidence from the node logits.

    With ``p = softmax(logits / temperature)`` over the K nodes, the refined position is
    ``sum_{n in best top} p_n xy_n / sum_{n in best top} p_n`` (the softmax over the ``top`` best
    nodes only) and the confidence is ``max_n p_n``. The chosen patch is ``order[:, 0]`` at
    ``cand_xy[b, order[b, 0]]``.

    Args:
        logits: (B, K) node logits.
        cand_xy: (B, K, 2) candidate map coordinates.
        top: nodes averaged into the refined position (>= 1; clamped to K).
        temperature: softmax temperature (> 0).

    Returns:
        :class:`RefinedPositions` ``(order, xy, confidence)``; ``xy`` in the floating dtype of
        ``cand_xy``.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K), got {tuple(logits.shape)}")
    cand_xy = _as_float_xy(cand_xy)
    if cand_xy.shape[:2] != logits.shape:
        raise ValueError(f"cand_xy {tuple(cand_xy.shape)} does not match logits {tuple(logits.shape)}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, k = logits.shape
    scaled = _widen(logits) / temperature
    order = torch.sort(scaled, dim=1, descending=True, stable=True).indices
    confidence = torch.softmax(scaled, dim=1).max(dim=1).values.to(logits.dtype)
    best = order[:, : min(top, k)]
    w = torch.softmax(scaled.gather(1, best), dim=1).to(cand_xy.dtype)  # renormalised over the best
    pts = cand_xy.gather(1, best.unsqueeze(-1).expand(b, best.shape[1], 2))
    xy = (w.unsqueeze(-1) * pts).sum(1)
    return RefinedPositions(order, xy, confidence)


@dataclass
class RefinementInput:
    """One batch of refinement graphs built from coarse retrieval (see :func:`gather_candidates`).

    Attributes:
        query_emb: (M, D) query embeddings.
        cand_emb: (M, K, D) candidate embeddings in coarse order.
        cand_xy: (M, K, 2) candidate map coordinates (metres).
        coarse_scores: (M, K) coarse similarities (higher = better).
        target_pos: (M,) long position of the true reference among the candidates or -1;
            ``None`` when the targets are unknown.
        cand_index: (M, K) long reference indices of the candidates (maps a chosen node back to
            its reference patch), or ``None``.
    """

    query_emb: torch.Tensor
    cand_emb: torch.Tensor
    cand_xy: torch.Tensor
    coarse_scores: torch.Tensor
    target_pos: torch.Tensor | None = None
    cand_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.query_emb.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RefinementInput:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return RefinementInput(**{name: None if v is None else fn(v) for name, v in values.items()})

    def select(self, rows: torch.Tensor | slice) -> RefinementInput:
        """The graphs at ``rows`` (an index tensor, boolean mask or slice)."""
        return self._map(lambda t: t[rows])

    def to(self, device: torch.device | str) -> RefinementInput:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))


def gather_candidates(
    query_emb: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_xy: torch.Tensor,
    ranked: torch.Tensor,
    scores: torch.Tensor,
    targets: torch.Tensor | None = None,
    top_k: int | None = None,
) -> RefinementInput:
    """Turn coarse retrieval results into a :class:`RefinementInput`.

    Args:
        query_emb: (M, D) query embeddings.
        ref_emb: (N, D) reference embeddings.
        ref_xy: (N, 2) reference map coordinates (metres).
        ranked: (M, K) reference indices of each query's candidates, best first.
        scores: (M, K) the matching coarse similarities (higher = better).
        targets: optional (M,) reference index of each query's true reference (-1 = none).
        top_k: keep only the first ``top_k`` candidates of each row (``None``: all K).

    Returns:
        The batch; ``target_pos`` is the first position of the target in its row, or -1 when it
        was not retrieved (``None`` without ``targets``); ``cand_index`` is ``ranked``.

    Raises:
        ValueError: mismatched shapes or indices outside ``0..N-1``.
    """
    if query_emb.dim() != 2 or ref_emb.dim() != 2 or query_emb.shape[1] != ref_emb.shape[1]:
        raise ValueError(
            f"query_emb (M, D) and ref_emb (N, D) must share D, got {tuple(query_emb.shape)} and "
            f"{tuple(ref_emb.shape)}"
        )
    m, n = query_emb.shape[0], ref_emb.shape[0]
    if ref_xy.shape != (n, 2):
        raise ValueError(f"ref_xy must have shape ({n}, 2), got {tuple(ref_xy.shape)}")
    ranked = torch.as_tensor(ranked, device=ref_emb.device).long()
    if ranked.dim() != 2 or ranked.shape[0] != m:
        raise ValueError(f"ranked must have shape ({m}, K), got {tuple(ranked.shape)}")
    if scores.shape != ranked.shape:
        raise ValueError(f"scores {tuple(scores.shape)} must match ranked {tuple(ranked.shape)}")
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        ranked, scores = ranked[:, :top_k], scores[:, :top_k]
    if ranked.numel() and bool(((ranked < 0) | (ranked >= n)).any()):
        raise ValueError(f"ranked holds reference indices outside 0..{n - 1}")
    ref_xy = ref_xy.to(ref_emb.device)
    target_pos = None
    if targets is not None:
        targets = torch.as_tensor(targets, device=ranked.device).long()
        if targets.shape != (m,):
            raise ValueError(f"targets must have shape ({m},), got {tuple(targets.shape)}")
        hit = ranked == targets.unsqueeze(1)
        first = hit.int().argmax(dim=1) if ranked.shape[1] else torch.zeros_like(targets)
        target_pos = torch.where(hit.any(dim=1), first, torch.full_like(first, -1))
    return RefinementInput(
        query_emb=query_emb,
        cand_emb=ref_emb[ranked],
        cand_xy=ref_xy[ranked],
        coarse_scores=scores,
        target_pos=target_pos,
        cand_index=ranked,
    )
