"""Retrieval evaluation: pairwise feature distances and ReID ranking metrics.

* :mod:`sarbridge.retrieval.distance` -- ``pairwise_distance`` (squared Euclidean, Euclidean,
  cosine) between query and gallery features, chunked over queries.
* :mod:`sarbridge.retrieval.metrics` -- ``evaluate`` (CMC, mAP, mINP; Market-1501 / fast-reid
  semantics), ``cmc_to_ranks`` and ``summarize`` (the percentages written to ``metrics.json``).
"""
