"""SAR patch -> optical map localisation (CMPC).

* :mod:`~sarbridge.tasks.geo.grid`: a GeoTIFF map cut on a grid into geo-tagged reference patches;
* :mod:`~sarbridge.tasks.geo.queries`: aligned and arbitrary SAR queries with ground truth and near-misses,
  same-area and cross-area splits; :mod:`~sarbridge.tasks.geo.sn6`: SN6-CMPC as released;
  :mod:`~sarbridge.tasks.geo.readers`: sarbridge JSON listing and geo CSV (own data), BigEarthNet;
* :mod:`~sarbridge.tasks.geo.refine`: the location-aware graph refinement;
* :mod:`~sarbridge.tasks.geo.train`, :mod:`~sarbridge.tasks.geo.run`: training and evaluation;
* :mod:`~sarbridge.tasks.geo.map_index`: the map index (``index build --map``); :mod:`~sarbridge.tasks.geo.locate`: ``locate``; :mod:`~sarbridge.tasks.geo.demo`, :mod:`~sarbridge.tasks.geo.ablation`.
"""
