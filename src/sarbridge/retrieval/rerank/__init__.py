"""Re-ranking and query expansion for retrieval (public entry point).

The implementations live in submodules; this module re-exports them:

* :mod:`sarbridge.retrieval.rerank.kreciprocal` -- k-reciprocal re-ranking (Zhong et al. 2017):
  the dense :func:`k_reciprocal_rerank` / :func:`k_reciprocal_rerank_features` (``O((M+N)^2)``
  memory, exact algorithm documented there); :mod:`sarbridge.retrieval.rerank.kreciprocal_topk` --
  the memory-bounded :func:`k_reciprocal_rerank_topk` (sparse weights, best ``topk`` per query,
  same values).
* :mod:`sarbridge.retrieval.rerank.gnn` -- GNN re-ranking (Zhang et al. 2020):
  :func:`gnn_rerank`, :func:`gnn_propagate`.
* :mod:`sarbridge.retrieval.rerank.query_expansion` -- :func:`average_query_expansion` (AQE) and
  :func:`alpha_query_expansion` (alpha-QE).
"""

from __future__ import annotations

from sarbridge.retrieval.rerank.gnn import GNNMode, gnn_propagate, gnn_rerank
from sarbridge.retrieval.rerank.kreciprocal import (  # noqa: F401  (private helpers for tests)
    _initial_ranking,
    _jaccard,
    _kernel_weights,
    _reciprocal,
    k_reciprocal_rerank,
    k_reciprocal_rerank_features,
)
from sarbridge.retrieval.rerank.kreciprocal_topk import k_reciprocal_rerank_topk
from sarbridge.retrieval.rerank.query_expansion import alpha_query_expansion, average_query_expansion

__all__ = [
    "GNNMode",
    "alpha_query_expansion",
    "average_query_expansion",
    "gnn_propagate",
    "gnn_rerank",
    "k_reciprocal_rerank",
    "k_reciprocal_rerank_features",
    "k_reciprocal_rerank_topk",
]
