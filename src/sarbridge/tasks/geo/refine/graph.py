"""The candidate graph of one query: spatial k-NN edges and translation-invariant node coordinates.

The top-``K`` reference patches of a SAR query are the nodes. :func:`build_candidate_graph` links
every node to its ``edge_k`` nearest *other* candidates by map distance ``d``, weighted
``exp(-d / sigma)``; :func:`relative_coordinates` gives each candidate's map position relative to
the top-1 candidate, divided by a spacing scale (unit-free); :func:`gather_nodes` collects the
neighbours' features in one batched indexing operation.
"""

from __future__ import annotations

import torch

from sarbridge.tasks.geo.refine.tensors import as_float_xy

__all__ = ["Scale", "build_candidate_graph", "gather_nodes", "relative_coordinates"]

#: A length scale: one positive number, or one per graph as a ``(B,)`` tensor.
Scale = float | torch.Tensor


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
    cand_xy = as_float_xy(cand_xy)
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
    cand_xy = as_float_xy(cand_xy)
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


def gather_nodes(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The features of each node's neighbours: ``out[b, i, m] = x[b, index[b, i, m]]``.

    Args:
        x: (B, K, D) node features.
        index: (B, K, M) long node positions.

    Returns:
        (B, K, M, D) gathered features.
    """
    b, k, m = index.shape
    d = x.shape[-1]
    flat = index.reshape(b, k * m, 1).expand(b, k * m, d)
    return x.gather(1, flat).view(b, k, m, d)
