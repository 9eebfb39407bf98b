"""The Python API, importable as ``sarbridge.api`` (it lives in :mod:`sarbridge.app.api`)."""

from sarbridge.app.api import Embedder, load_embedder, load_model, rank

__all__ = ["Embedder", "load_embedder", "load_model", "rank"]
