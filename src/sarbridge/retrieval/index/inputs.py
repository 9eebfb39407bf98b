"""Checking what callers hand to an index: embedding matrices and JSON metadata."""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np

from sarbridge.retrieval.distance import RetrievalInputError, to_numpy

__all__ = ["as_matrix", "json_default", "l2_normalized", "to_json"]

_NORM_EPS: Final[float] = 1e-12


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars / arrays become Python numbers / lists.

    Args:
        obj: the object ``json`` cannot serialise itself.

    Returns:
        The Python equivalent.

    Raises:
        TypeError: anything else.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(value: Any, what: str) -> str:
    """Serialise ``value`` as strict JSON (no NaN).

    Args:
        value: the value.
        what: its name in the error message.

    Returns:
        The JSON text.

    Raises:
        RetrievalInputError: the value is not JSON-serialisable (or holds NaN / inf).
    """
    try:
        return json.dumps(value, default=json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RetrievalInputError(
            f"{what} is not JSON-serialisable: {exc}",
            "use str / int / float (finite) / bool / None / lists and dicts of them",
        ) from exc


def as_matrix(x: Any, name: str, dim: int) -> np.ndarray:
    """Validate a ``(n, dim)`` real, finite matrix and return it as C-contiguous float32.

    Args:
        x: numpy array, torch tensor or nested sequence.
        name: its name in error messages (plural: "embeddings", "queries").
        dim: the required number of columns.

    Returns:
        The matrix (a copy only where a conversion was needed).

    Raises:
        RetrievalInputError: not 2-D, wrong dimension, non-numeric, NaN or infinite values
            (naming the first bad row).
    """
    a = to_numpy(x, name)
    if a.ndim != 2:
        raise RetrievalInputError(
            f"{name} must be a 2-D (num_items, dim) array, got shape {a.shape}",
            "reshape a single vector with .reshape(1, -1)" if a.ndim == 1 else None,
        )
    if a.dtype.kind not in "fiu":
        raise RetrievalInputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.shape[1] != dim:
        raise RetrievalInputError(f"{name} have dimension {a.shape[1]}, but the index has dimension {dim}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        bad_rows = np.flatnonzero(~np.isfinite(a).all(axis=1))
        what = "NaN" if np.isnan(a[bad_rows]).any() else "infinite"
        raise RetrievalInputError(
            f"{name} contain {what} values (in {bad_rows.size} row(s), first row {int(bad_rows[0])})",
            "check the model outputs (diverged training?); values beyond the float32 range also "
            "become infinite",
        )
    return a


def l2_normalized(a: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of a float32 matrix (all-zero rows stay zero).

    Args:
        a: ``(n, dim)`` float32 matrix.

    Returns:
        A new ``(n, dim)`` float32 matrix with unit (or zero) rows.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
    return (a / np.maximum(norms, _NORM_EPS)[:, None]).astype(np.float32)
