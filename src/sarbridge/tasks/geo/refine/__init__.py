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

The package, by concept: :mod:`~sarbridge.tasks.geo.refine.graph` (edges and relative
coordinates), :mod:`~sarbridge.tasks.geo.refine.network` (the attention layers and
:class:`LocationRefiner`), :mod:`~sarbridge.tasks.geo.refine.loss` (:func:`refinement_loss`),
:mod:`~sarbridge.tasks.geo.refine.positions` (:func:`refine_positions`) and
:mod:`~sarbridge.tasks.geo.refine.candidates` (:class:`RefinementInput`, :func:`gather_candidates`).
Training and noise calibration of the refiner live in :mod:`sarbridge.tasks.geo.train`.

Everything here is pure torch: no device choice (outputs follow the inputs' device), no randomness
besides dropout and parameter initialisation (seed torch for determinism).
"""

from sarbridge.tasks.geo.refine.candidates import RefinementInput, gather_candidates
from sarbridge.tasks.geo.refine.graph import build_candidate_graph, relative_coordinates
from sarbridge.tasks.geo.refine.loss import refinement_loss
from sarbridge.tasks.geo.refine.network import GraphAttentionLayer, LocationRefiner
from sarbridge.tasks.geo.refine.positions import RefinedPositions, refine_positions

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
