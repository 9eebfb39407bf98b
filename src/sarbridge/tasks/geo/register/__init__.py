"""Metre-level registration of a SAR query inside optical map windows (after CMPC retrieval).

Retrieval answers with a grid cell (tens to hundreds of metres off); registration places the SAR
patch inside a window of the optical map around each top candidate to a pixel or better:

* :mod:`~sarbridge.tasks.geo.register.descriptors`: CFOG, the training-free oriented-gradient descriptor;
* :mod:`~sarbridge.tasks.geo.register.matching`: SSD and NCC over all offsets with FFTs;
* :mod:`~sarbridge.tasks.geo.register.peaks`: sub-pixel peak and peak-to-second-peak confidence;
* :mod:`~sarbridge.tasks.geo.register.registration`: :func:`register` (cfog / ncc / features), batched
  over candidate windows, with an optional rotation/scale search (:mod:`~sarbridge.tasks.geo.register.warp`);
* :mod:`~sarbridge.tasks.geo.register.pyramid`: coarse-to-fine search (all offsets at reduced resolution,
  refinement at full resolution), several times faster on large windows;
* :mod:`~sarbridge.tasks.geo.register.stage`: the stage after retrieval: windows around the candidates,
  registration, and the retrieval position kept when the confidence is below a threshold;
* :mod:`~sarbridge.tasks.geo.register.images`: input checks, SAR to dB, optical band combinations.
"""

from sarbridge.tasks.geo.register.descriptors import CFOG_DEFAULTS, cfog, cfog_border, gaussian_blur
from sarbridge.tasks.geo.register.images import MAX_BANDS, as_image, optical_intensity, sar_to_db
from sarbridge.tasks.geo.register.matching import cross_correlation, fast_size, local_sums, match_ssd_fft, ncc_fft
from sarbridge.tasks.geo.register.peaks import peak_ratio, subpixel_peak
from sarbridge.tasks.geo.register.pyramid import register_coarse_to_fine
from sarbridge.tasks.geo.register.registration import (
    METHODS,
    SIMILARITIES,
    RegistrationResult,
    register,
    register_features,
)
from sarbridge.tasks.geo.register.stage import (
    DEFAULT_THRESHOLD,
    MapDescriptors,
    Placement,
    candidate_boxes,
    register_in_map,
)
from sarbridge.tasks.geo.register.warp import central_box, warp_query

__all__ = [
    "CFOG_DEFAULTS",
    "DEFAULT_THRESHOLD",
    "MAX_BANDS",
    "METHODS",
    "SIMILARITIES",
    "MapDescriptors",
    "Placement",
    "RegistrationResult",
    "as_image",
    "candidate_boxes",
    "central_box",
    "cfog",
    "cfog_border",
    "cross_correlation",
    "fast_size",
    "gaussian_blur",
    "local_sums",
    "match_ssd_fft",
    "ncc_fft",
    "optical_intensity",
    "peak_ratio",
    "register",
    "register_coarse_to_fine",
    "register_features",
    "register_in_map",
    "sar_to_db",
    "subpixel_peak",
    "warp_query",
]
