"""Python API: load a trained model, embed images of a stated modality, rank a gallery.

Example::

    from sarbridge.app.api import load_embedder

    emb = load_embedder("runs/demo/best.pt")
    q = emb.embed(["ship_opt.tif"], modality="optical")
    g = emb.embed(["a_sar.tif", "b_sar.tif"], modality="sar")
    idx, dist = emb.rank(q, g, k=2)

:func:`load_model` loads any sarbridge checkpoint (re-identification model, localisation bundle,
pretrained backbone, translation bridge) as its task's inference object.
"""

from __future__ import annotations

from sarbridge.retrieval.rankings import rank
from sarbridge.tasks.registry import load_model
from sarbridge.tasks.reid.embedder import Embedder, ImageLike, load_embedder

__all__ = ["Embedder", "ImageLike", "load_embedder", "load_model", "rank"]
