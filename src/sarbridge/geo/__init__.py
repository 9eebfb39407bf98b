"""SAR patch -> optical map localisation (CMPC).

* :mod:`~sarbridge.geo.grid`: a GeoTIFF map cut on a grid into geo-tagged reference patches;
* :mod:`~sarbridge.geo.queries`: aligned and arbitrary SAR queries with ground truth and near-misses,
  same-area and cross-area splits; :mod:`~sarbridge.geo.readers`: SN6-CMPC JSON, manifests, BigEarthNet;
* :mod:`~sarbridge.geo.refine`: the location-aware graph refinement;
* :mod:`~sarbridge.geo.train`, :mod:`~sarbridge.geo.run`: training and evaluation;
* :mod:`~sarbridge.geo.locate`: map index and ``locate``; :mod:`~sarbridge.geo.demo`, :mod:`~sarbridge.geo.ablation`.
"""
