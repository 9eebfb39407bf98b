"""The location-aware graph network: attention message passing over the candidate graph.

:class:`GraphAttentionLayer` passes multi-head attention messages along the spatial edges of
:func:`~sarbridge.tasks.geo.refine.graph.build_candidate_graph` (plus a self-loop);
:class:`LocationRefiner` builds the node features from the query / candidate embeddings, the
coarse score and the relative map position, stacks the layers and scores every node.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sarbridge.tasks.geo.refine.graph import build_candidate_graph, gather_nodes, relative_coordinates
from sarbridge.tasks.geo.refine.tensors import as_float_xy, widen

__all__ = ["GraphAttentionLayer", "LocationRefiner"]


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
        values = gather_nodes(self.value(h), index)  # (B, K, M, dim)
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
            keys = gather_nodes(self.key(h), index)
            if edge is not None:
                assert self.edge_key is not None
                keys = keys + self.edge_key(edge)
            keys = keys.view(b, k, m, nh, hd)
            bias = torch.log(w.clamp_min(torch.finfo(w.dtype).tiny)).unsqueeze(-1)  # (B, K, M, 1)
            logits = (q * keys).sum(-1) / math.sqrt(hd) + bias  # (B, K, M, H)
            attn = torch.softmax(widen(logits), dim=2).to(values.dtype)
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
            last = cast(nn.Linear, self.head[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
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
        cand_xy = as_float_xy(cand_xy)
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
                offset = gather_nodes(rel, neighbours) - rel.unsqueeze(2)  # (B, K, E, 2)
                edge = torch.cat([offset, offset.norm(dim=-1, keepdim=True)], dim=-1).to(h.dtype)
            for layer in self.layers:
                h = layer(h, neighbours, weights, edge)
        out = self.head(h).squeeze(-1)
        if self.residual:
            s = scores.to(out.dtype)
            z = (s - s.mean(dim=1, keepdim=True)) / s.std(dim=1, keepdim=True).clamp_min(1e-6) if k > 1 else s * 0
            out = out + self.score_scale * z
        return out
