"""Tests of the location-aware graph refinement (sarbridge.tasks.geo.refine)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sarbridge.tasks.geo.refine import (
    GraphAttentionLayer,
    LocationRefiner,
    RefinementInput,
    build_candidate_graph,
    gather_candidates,
    refine_positions,
    refinement_loss,
    relative_coordinates,
)

# A 2 x 3 grid of patch centres, 100 m apart, numbered row-major:
#   3 4 5      (y = 100)
#   0 1 2      (y = 0)
GRID = torch.tensor([[0, 0], [100, 0], [200, 0], [0, 100], [100, 100], [200, 100]], dtype=torch.float64)
E1, R2 = math.exp(-1.0), math.sqrt(2.0)


def grid_batch() -> torch.Tensor:
    return GRID.unsqueeze(0)


# ----------------------------------------------------------------------------- graph


def test_graph_neighbours_and_weights_on_hand_layout():
    nb, w = build_candidate_graph(grid_batch(), edge_k=3, sigma=100.0)
    assert nb.shape == (1, 6, 3) and nb.dtype == torch.long and w.shape == (1, 6, 3)
    # Nearest first; equal distances in candidate order.
    expected = [[1, 3, 4], [0, 2, 4], [1, 5, 4], [0, 4, 1], [1, 3, 5], [2, 4, 1]]
    assert nb[0].tolist() == expected
    exp_w = [
        [E1, E1, math.exp(-R2)],
        [E1, E1, E1],
        [E1, E1, math.exp(-R2)],
        [E1, E1, math.exp(-R2)],
        [E1, E1, E1],
        [E1, E1, math.exp(-R2)],
    ]
    torch.testing.assert_close(w[0], torch.tensor(exp_w, dtype=torch.float64))
    # No node is its own neighbour.
    assert not bool((nb[0] == torch.arange(6).unsqueeze(1)).any())


def test_graph_default_sigma_is_median_pairwise_distance():
    # The 15 pairwise distances (in 100 m): 1 x7, sqrt2 x4, 2 x2, sqrt5 x2 -> median sqrt2.
    _, w = build_candidate_graph(grid_batch(), edge_k=3)
    torch.testing.assert_close(
        w[0, 0], torch.tensor([math.exp(-1 / R2), math.exp(-1 / R2), math.exp(-1.0)], dtype=torch.float64)
    )
    # Per graph: a second graph scaled x10 gets the same weights.
    _, w2 = build_candidate_graph(torch.stack([GRID, GRID * 10]), edge_k=3)
    torch.testing.assert_close(w2[0], w2[1])


def test_graph_edge_count_clamps_and_sigma_guard():
    nb, w = build_candidate_graph(grid_batch()[:, :3], edge_k=5, sigma=50.0)
    assert nb.shape == (1, 3, 2) and w.shape == (1, 3, 2)
    assert nb[0].tolist() == [[1, 2], [0, 2], [1, 0]]
    nb1, w1 = build_candidate_graph(grid_batch()[:, :1], edge_k=5)
    assert nb1.shape == (1, 1, 0) and w1.shape == (1, 1, 0)
    # Coincident candidates: weights 1, no division by zero.
    _, wc = build_candidate_graph(torch.zeros(1, 4, 2), edge_k=2)
    torch.testing.assert_close(wc, torch.ones(1, 4, 2))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            build_candidate_graph(grid_batch(), sigma=bad)
    with pytest.raises(ValueError, match="cand_xy"):
        build_candidate_graph(torch.zeros(4, 2))


# ----------------------------------------------------------------------------- coordinates


def test_relative_coordinates_top1_at_origin():
    xy = grid_batch() + torch.tensor([5000.0, 7000.0], dtype=torch.float64)
    rel = relative_coordinates(xy)  # default scale: median NN spacing = 100 m
    torch.testing.assert_close(rel[0], (GRID - GRID[0]) / 100.0)
    assert rel[0, 0].tolist() == [0.0, 0.0]
    rel_s = relative_coordinates(xy, scale=50.0)
    torch.testing.assert_close(rel_s[0], (GRID - GRID[0]) / 50.0)
    rel_a = relative_coordinates(xy, anchor=torch.tensor([4]))
    assert rel_a[0, 4].tolist() == [0.0, 0.0]
    torch.testing.assert_close(rel_a[0, 0], torch.tensor([-1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="scale"):
        relative_coordinates(xy, scale=0.0)
    with pytest.raises(ValueError, match="anchor"):
        relative_coordinates(xy, anchor=torch.tensor([6]))


# ----------------------------------------------------------------------------- positions


def test_refine_positions_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    xy = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]])
    order, refined, conf = refine_positions(logits, xy, top=2)
    assert order.tolist() == [[0, 2, 1, 3]]
    w0, w2 = math.exp(2.0), math.exp(1.0)
    torch.testing.assert_close(refined, torch.tensor([[0.0, 10.0 * w2 / (w0 + w2)]]))
    z = sum(math.exp(v) for v in (2.0, 0.0, 1.0, -1.0))
    torch.testing.assert_close(conf, torch.tensor([math.exp(2.0) / z]))

    # top=1: the best node itself; temperature sharpens the confidence.
    _, refined1, _ = refine_positions(logits, xy, top=1)
    torch.testing.assert_close(refined1, xy[:, 0])
    _, refined_hot, conf_hot = refine_positions(logits, xy, top=2, temperature=0.5)
    a, b = math.exp(4.0), math.exp(2.0)
    torch.testing.assert_close(refined_hot, torch.tensor([[0.0, 10.0 * b / (a + b)]]))
    assert float(conf_hot) > float(conf)
    # top larger than K: all nodes.
    _, refined_all, _ = refine_positions(logits, xy, top=10)
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(refined_all, (p.unsqueeze(-1) * xy).sum(1))
    with pytest.raises(ValueError, match="temperature"):
        refine_positions(logits, xy, temperature=0.0)


# ----------------------------------------------------------------------------- loss


def test_loss_skips_graphs_without_target():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=g, requires_grad=True)
    target = torch.tensor([2, -1, 0, -1])
    loss = refinement_loss(logits, target)
    ref = F.cross_entropy(logits[[0, 2]], target[[0, 2]])
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert logits.grad is not None and bool((logits.grad[[1, 3]] == 0).all())


def test_loss_without_any_target_is_connected_zero():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = refinement_loss(logits, torch.full((3,), -1))
    assert float(loss.detach()) == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and bool((logits.grad == 0).all())
    with pytest.raises(ValueError, match="target_pos"):
        refinement_loss(logits, torch.tensor([0, 4, -1]))


def test_loss_soft_targets():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, generator=g)
    target = torch.tensor([1, -1, 2])
    soft = torch.tensor([[0.0, 0.6, 0.4, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # Row 0 soft, row 1 skipped (no target, no mass), row 2 falls back to its hard target.
    loss = refinement_loss(logits, target, soft_targets=soft)
    logp = F.log_softmax(logits, 1)
    ref = (-(soft[0] * logp[0]).sum() - logp[2, 2]) / 2
    torch.testing.assert_close(loss, ref)
    # Soft mass is re-normalised and also rescues a graph whose exact target was missed.
    soft2 = torch.tensor([[0.0, 3.0, 0.0, 1.0]] * 3)
    loss2 = refinement_loss(logits, torch.full((3,), -1), soft_targets=soft2)
    torch.testing.assert_close(loss2, -(torch.tensor([0.0, 0.75, 0.0, 0.25]) * logp).sum(1).mean())
    # One-hot soft targets equal the hard loss.
    onehot = F.one_hot(torch.tensor([1, 0, 2]), 4).float() * torch.tensor([[1.0], [0.0], [1.0]])
    torch.testing.assert_close(refinement_loss(logits, target, onehot), refinement_loss(logits, target))


# ----------------------------------------------------------------------------- model


def _random_graphs(b: int = 3, k: int = 8, d: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=g)
    c = torch.randn(b, k, d, generator=g)
    xy = torch.rand(b, k, 2, generator=g, dtype=torch.float64) * 1000 + 3.0e5
    s = torch.randn(b, k, generator=g)
    return q, c, xy, s


@pytest.mark.parametrize("use_attention", [True, False])
@pytest.mark.parametrize("use_coords", [True, False])
def test_refiner_permutation_equivariance(use_attention, use_coords):
    torch.manual_seed(0)
    model = LocationRefiner(12, hidden=16, layers=2, heads=4, edge_k=3, use_attention=use_attention,
                            use_coords=use_coords).eval()
    q, c, xy, s = _random_graphs()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(q, c, xy, s)
        out_p = model(q, c[:, perm], xy[:, perm], s[:, perm])
    assert out.shape == (3, 8)
    torch.testing.assert_close(out_p, out[:, perm], rtol=1e-5, atol=1e-5)


def test_refiner_permutation_equivariance_without_scores_fixing_top1():
    torch.manual_seed(0)
    model = LocationRefiner(12, hidden=16, layers=1, heads=2).eval()
    q, c, xy, _ = _random_graphs()
    rest = 1 + torch.randperm(7, generator=torch.Generator().manual_seed(4))
    perm = torch.cat([torch.zeros(1, dtype=torch.long), rest])  # candidate 0 stays the top-1
    with torch.no_grad():
        out, out_p = model(q, c, xy), model(q, c[:, perm], xy[:, perm])
    torch.testing.assert_close(out_p, out[:, perm], rtol=1e-5, atol=1e-5)


def test_refiner_translation_and_scale_invariance():
    torch.manual_seed(0)
    model = LocationRefiner(12, hidden=16, layers=2, heads=4).eval()
    q, c, xy, s = _random_graphs()
    with torch.no_grad():
        out = model(q, c, xy, s)
        shifted = model(q, c, xy + torch.tensor([12345.0, -6789.0], dtype=torch.float64), s)
        scaled = model(q, c, xy * 3.0, s)
    torch.testing.assert_close(shifted, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scaled, out, rtol=1e-5, atol=1e-5)


def test_refiner_deterministic_single_candidate_and_gradients():
    q, c, xy, s = _random_graphs(k=5)
    torch.manual_seed(7)
    a = LocationRefiner(12, hidden=16, layers=2, heads=4)
    torch.manual_seed(7)
    b = LocationRefiner(12, hidden=16, layers=2, heads=4)
    torch.testing.assert_close(a(q, c, xy, s), b(q, c, xy, s), rtol=0, atol=0)
    # K = 1: self-loop only.
    assert a(q, c[:, :1], xy[:, :1], s[:, :1]).shape == (3, 1)
    # End-to-end use: gradients reach every parameter and the embeddings.
    q.requires_grad_(True)
    c.requires_grad_(True)
    refinement_loss(a(q, c, xy, s), torch.tensor([0, 3, -1])).backward()
    assert q.grad is not None and c.grad is not None
    assert all(p.grad is not None for p in a.parameters())
    with pytest.raises(ValueError, match="heads"):
        LocationRefiner(12, hidden=10, heads=4)


def test_attention_layer_restricts_messages_to_neighbours():
    # Nodes 0 and 1 only listen to each other; node 2 listens to node 0. Changing node 2's
    # features must leave nodes 0 and 1 untouched.
    torch.manual_seed(0)
    layer = GraphAttentionLayer(8, heads=2).eval()
    h = torch.randn(1, 3, 8)
    nb = torch.tensor([[[1], [0], [0]]])
    w = torch.tensor([[[0.5], [0.5], [0.5]]])
    h2 = h.clone()
    h2[0, 2] += 5.0
    with torch.no_grad():
        out, out2 = layer(h, nb, w), layer(h2, nb, w)
    torch.testing.assert_close(out[0, :2], out2[0, :2])
    assert not torch.allclose(out[0, 2], out2[0, 2])


# ----------------------------------------------------------------------------- toy training


def _cluster_toy(n: int, seed: int, k: int = 10, d: int = 8):
    """The true reference sits in the middle of a plus-shaped cluster of four grid neighbours
    (100 m away); five false matches lie anywhere within 2 km. Embeddings are pure noise around
    the query, so the coarse order ranks the true reference at random."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 1, 2, generator=g) * 10000
    plus = torch.tensor([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float32) * 100.0
    near = centre + plus + 10 * torch.randn(n, 5, 2, generator=g)
    far = centre + (torch.rand(n, k - 5, 2, generator=g) - 0.5) * 4000
    xy = torch.cat([near, far], 1)
    q = torch.randn(n, d, generator=g)
    c = q.unsqueeze(1) + torch.randn(n, k, d, generator=g)
    scores = F.cosine_similarity(q.unsqueeze(1), c, dim=-1)
    order = scores.argsort(1, descending=True)  # coarse order
    xy = xy.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
    c = c.gather(1, order.unsqueeze(-1).expand(-1, -1, d))
    scores = scores.gather(1, order)
    target = (order == 0).int().argmax(1)  # where the true node (index 0 before sorting) went
    return q, c, xy, scores, target


def test_refiner_learns_spatial_centrality():
    train, test = _cluster_toy(200, seed=1), _cluster_toy(200, seed=2)
    coarse_top1 = float((test[4] == 0).float().mean())
    torch.manual_seed(0)
    model = LocationRefiner(8, hidden=16, layers=2, heads=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = refinement_loss(model(*train[:4]), train[4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        order, _, _ = refine_positions(model(*test[:4]), test[2])
    refined_top1 = float((order[:, 0] == test[4]).float().mean())
    assert coarse_top1 < 0.25
    assert refined_top1 > 0.6 and refined_top1 > coarse_top1 + 0.3, (coarse_top1, refined_top1)


# ----------------------------------------------------------------------------- gathering


def test_gather_candidates_target_positions():
    ref_emb = torch.arange(12.0).view(6, 2)
    ref_xy = GRID.float()
    query = torch.zeros(3, 2)
    ranked = torch.tensor([[4, 1, 2], [0, 5, 3], [2, 2, 1]])
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6], [0.3, 0.2, 0.1]])
    batch = gather_candidates(query, ref_emb, ref_xy, ranked, scores, targets=torch.tensor([2, 1, 2]))
    assert isinstance(batch, RefinementInput) and len(batch) == 3
    assert batch.target_pos is not None and batch.target_pos.tolist() == [2, -1, 0]
    torch.testing.assert_close(batch.cand_emb[0, 0], ref_emb[4])
    torch.testing.assert_close(batch.cand_xy[1, 1], ref_xy[5])
    assert batch.cand_index is not None and batch.cand_index.tolist() == ranked.tolist()
    assert batch.coarse_scores is scores
    # Truncation drops a target that is then out of reach; no targets -> None.
    short = gather_candidates(query, ref_emb, ref_xy, ranked, scores, targets=torch.tensor([2, 5, -1]), top_k=1)
    assert short.cand_emb.shape == (3, 1, 2) and short.target_pos.tolist() == [-1, -1, -1]
    assert gather_candidates(query, ref_emb, ref_xy, ranked, scores).target_pos is None
    sub = batch.select(torch.tensor([2]))
    assert sub.target_pos.tolist() == [0] and sub.cand_xy.shape == (1, 3, 2)
    with pytest.raises(ValueError, match="ranked"):
        gather_candidates(query, ref_emb, ref_xy, ranked + 1, scores)
    # Feeds the refiner directly.
    model = LocationRefiner(2, hidden=8, layers=1, heads=2, edge_k=2)
    logits = model(batch.query_emb, batch.cand_emb, batch.cand_xy, batch.coarse_scores)
    assert logits.shape == (3, 3)
    assert torch.isfinite(refinement_loss(logits, batch.target_pos))


def test_untrained_residual_refiner_keeps_the_coarse_order() -> None:
    torch.manual_seed(0)
    refiner = LocationRefiner(8, hidden=16, layers=2, heads=2, edge_k=3)
    q = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    cand = torch.nn.functional.normalize(torch.randn(5, 6, 8), dim=1)
    scores = torch.rand(5, 6)
    logits = refiner(q, cand, torch.rand(5, 6, 2) * 100, scores)
    assert torch.equal(logits.argsort(dim=1, descending=True), scores.argsort(dim=1, descending=True))
    plain = LocationRefiner(8, hidden=16, layers=2, heads=2, edge_k=3, residual=False)
    assert not hasattr(plain, "score_scale")
