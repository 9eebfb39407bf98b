"""The on-disk format of an index folder (version 1): writing it, and reading it back verified.

A folder holds ``vectors.npy`` (the ``(count, dim)`` float32 embeddings, plain ``.npy``),
``metadata.json`` (the list of per-item dicts), the kind's extra state files (``index.faiss`` for a
trained ``ivfpq`` and for ``hnsw``) and, written last, ``manifest.json``::

    {"format": "sarbridge-index", "version": 1, "kind", "metric", "dim", "count", "backend",
     "normalize", "params" (only for kinds with parameters), "tuning" (only after tune_search),
     "sha256": {file: hex digest}, "created_at", "info"}

``tuning`` records how the search settings in ``params`` (``nprobe``, ``rescore``, ``ef_search``)
were chosen by :func:`~sarbridge.retrieval.index.tune.tune_search` (target, recall reached, sample
size ...). Both it and ``params["rescore"]`` are optional additions to version 1: folders without
them load with the kind's defaults, as before.

Every file is written atomically; :func:`write_index` removes an existing manifest first, so an
interrupted save leaves a folder that :func:`read_index` reports as incomplete. :func:`read_index`
checks the format and version, that every listed file exists, its SHA-256, and that vectors and
metadata agree with the recorded count and dimension; anything off raises
:class:`~sarbridge.core.errors.DataError`. The full description is in
:mod:`sarbridge.retrieval.index`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeGuard

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.core.utils import atomic_write, atomic_write_json, file_digest
from sarbridge.retrieval.index.approximate import FAISS_STATE_FILE
from sarbridge.retrieval.index.inputs import json_default
from sarbridge.retrieval.index.kinds import available_kinds, get_kind
from sarbridge.retrieval.index.settings import search_settings

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "METADATA_FILE",
    "REBUILD_HINT",
    "VECTORS_FILE",
    "StoredIndex",
    "damaged",
    "read_index",
    "read_search_settings",
    "write_index",
]

#: ``format`` field of ``manifest.json``.
FORMAT: Final[str] = "sarbridge-index"
#: ``version`` field of ``manifest.json`` written by this code (and the only one it reads).
FORMAT_VERSION: Final[int] = 1

MANIFEST_FILE: Final[str] = "manifest.json"
VECTORS_FILE: Final[str] = "vectors.npy"
METADATA_FILE: Final[str] = "metadata.json"

#: Hint of the errors about a damaged or outdated index.
REBUILD_HINT: Final[str] = (
    "rebuild it with EmbeddingIndex(dim).add(embeddings, metadata) and save() from the source "
    "embeddings"
)


@dataclass
class StoredIndex:
    """The verified contents of an index folder (see :func:`read_index`).

    Attributes:
        kind, metric: the manifest's kind (a registered one) and metric (not yet validated).
        dim, count: embedding dimension and number of items.
        normalize: whether the index L2-normalises its inputs.
        params: the kind's effective parameters, or None.
        info: the caller's free info dict.
        created_at: ISO-8601 time of the save, or None.
        vectors: ``(count, dim)`` float32 embeddings.
        metadata: ``count`` metadata dicts.
        state_files: the kind's extra files (name -> content), checksums verified.
        tuning: the record of :func:`~sarbridge.retrieval.index.tune.tune_search`, or None.
    """

    kind: str
    metric: Any
    dim: int
    count: int
    normalize: bool
    params: dict[str, Any] | None
    info: dict[str, Any]
    created_at: str | None
    vectors: np.ndarray
    metadata: list[dict[str, Any]]
    state_files: dict[str, bytes] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None


def damaged(directory: Path, what: str) -> DataError:
    """The error for an index folder whose contents are inconsistent.

    Args:
        directory: the index folder.
        what: what is wrong with it.

    Returns:
        A :class:`~sarbridge.core.errors.DataError` (to raise) with the rebuild hint.
    """
    return DataError(f"index '{directory}' is damaged: {what}", REBUILD_HINT)


def _write_npy(path: Path, a: np.ndarray) -> None:
    """``np.save`` through a file object (``np.save`` on a path would append ``.npy``)."""
    with open(path, "wb") as f:
        np.save(f, a, allow_pickle=False)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _write_bytes(path: Path, content: bytes) -> None:
    path.write_bytes(content)


def _is_int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def write_index(
    directory: str | Path,
    *,
    kind: str,
    metric: str,
    backend: str,
    normalize: bool,
    params: Mapping[str, Any],
    info: Mapping[str, Any],
    vectors: np.ndarray,
    metadata: Sequence[Mapping[str, Any]],
    state_files: Mapping[str, bytes],
    tuning: Mapping[str, Any] | None = None,
) -> str:
    """Write an index folder: data files first, each atomically, then the manifest.

    Args:
        directory: target folder (created if needed; an existing index is replaced).
        kind, metric, backend, normalize: the manifest fields of the same names.
        params: the kind's effective parameters (left out of the manifest when empty).
        info: the caller's JSON-serialisable info dict.
        vectors: ``(count, dim)`` float32 embeddings.
        metadata: one JSON-serialisable dict per vector.
        state_files: the kind's extra files (name -> content).
        tuning: how the search settings were chosen (left out of the manifest when None).

    Returns:
        The ``created_at`` time stamp written into the manifest (ISO-8601, UTC, seconds).

    Raises:
        ValueError: a state file would overwrite one of the format's own files or is not a plain
            file name.
    """
    d = Path(directory)
    n, dim = vectors.shape
    meta_text = json.dumps(list(metadata), default=json_default, allow_nan=False)
    reserved = {MANIFEST_FILE, VECTORS_FILE, METADATA_FILE}
    for name in state_files:
        if name in reserved or Path(name).name != name:
            raise ValueError(f"index kind '{kind}' uses an invalid state file name {name!r}")

    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST_FILE).unlink(missing_ok=True)
    atomic_write(d / VECTORS_FILE, lambda p: _write_npy(p, vectors))
    atomic_write(d / METADATA_FILE, lambda p: _write_text(p, meta_text))
    sha = {
        VECTORS_FILE: file_digest(d / VECTORS_FILE),
        METADATA_FILE: hashlib.sha256(meta_text.encode("utf-8")).hexdigest(),
    }
    for name, content in state_files.items():
        atomic_write(d / name, partial(_write_bytes, content=content))
        sha[name] = hashlib.sha256(content).hexdigest()
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "metric": metric,
        "dim": dim,
        "count": n,
        "backend": backend,
        "normalize": normalize,
        **({"params": dict(params)} if params else {}),
        **({"tuning": dict(tuning)} if tuning else {}),
        "sha256": sha,
        "created_at": created_at,
        "info": dict(info),
    }
    atomic_write_json(d / MANIFEST_FILE, manifest)
    return created_at


def _read_manifest(d: Path) -> dict[str, Any]:
    """The parsed manifest of ``d`` after the format and version checks."""
    if not d.is_dir():
        raise DataError(f"index '{d}' does not exist (no such directory)", "check the path")
    mpath = d / MANIFEST_FILE
    if not mpath.is_file():
        raise DataError(
            f"index '{d}' is incomplete: {MANIFEST_FILE} is missing (not an index folder, or an "
            "interrupted save)",
            REBUILD_HINT,
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"index '{d}' is damaged: {MANIFEST_FILE} cannot be read ({exc})", REBUILD_HINT) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(
            f"'{d}' is not a sarbridge index: {MANIFEST_FILE} has format {found!r}, expected '{FORMAT}'",
            "point to a folder written by EmbeddingIndex.save()",
        )
    version = manifest.get("version")
    if not _is_int(version) or version != FORMAT_VERSION:
        newer = _is_int(version) and version > FORMAT_VERSION
        raise DataError(
            f"index '{d}' has format version {version!r}; this sarbridge reads version {FORMAT_VERSION}",
            "upgrade sarbridge" if newer else REBUILD_HINT,
        )
    return manifest


def read_index(directory: str | Path) -> StoredIndex:
    """Read and verify an index folder written by :func:`write_index`.

    Args:
        directory: the index folder.

    Returns:
        Its contents; the search structure is not rebuilt here.

    Raises:
        DataError: the folder or its manifest is missing, the manifest is not a
            ``sarbridge-index`` of a supported version or names an unknown kind, a listed file is
            missing, a checksum does not match, or the vectors / metadata disagree with the
            manifest.
    """
    d = Path(directory)
    manifest = _read_manifest(d)
    dim, count = manifest.get("dim"), manifest.get("count")
    if not _is_int(dim) or dim < 1 or not _is_int(count) or count < 0:
        raise damaged(d, f"{MANIFEST_FILE} has an invalid dim {dim!r} or count {count!r}")
    kind = manifest.get("kind")
    spec = get_kind(kind)
    if spec is None:
        raise DataError(
            f"index '{d}' has kind {kind!r}, which this sarbridge does not know",
            f"known kinds: {', '.join(available_kinds())}; upgrade sarbridge or rebuild the index",
        )
    sha = manifest.get("sha256")
    if (
        not isinstance(sha, dict)
        or VECTORS_FILE not in sha
        or METADATA_FILE not in sha
        or not all(isinstance(k, str) and Path(k).name == k and k != MANIFEST_FILE and isinstance(v, str)
                   for k, v in sha.items())
    ):
        raise damaged(d, f"{MANIFEST_FILE} has no valid sha256 table for {VECTORS_FILE} and {METADATA_FILE}")
    info = manifest.get("info", {})
    if not isinstance(info, dict):
        raise damaged(d, f"{MANIFEST_FILE} has a non-dict info entry")
    for name, digest in sha.items():
        path = d / name
        if not path.is_file():
            raise damaged(d, f"{name} is missing")
        if file_digest(path) != digest:
            raise damaged(d, f"checksum of {name} does not match its manifest")

    try:
        vectors = np.load(d / VECTORS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise damaged(d, f"{VECTORS_FILE} cannot be read ({exc})") from exc
    if vectors.dtype != np.float32 or vectors.shape != (count, dim):
        raise damaged(
            d,
            f"{VECTORS_FILE} holds a {vectors.dtype} array of shape {vectors.shape}, but the manifest "
            f"says float32 ({count}, {dim})",
        )
    if vectors.size and not np.isfinite(vectors).all():
        raise damaged(d, f"{VECTORS_FILE} contains NaN or infinite values")
    try:
        metadata = json.loads((d / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(d, f"{METADATA_FILE} cannot be read ({exc})") from exc
    if not isinstance(metadata, list) or not all(isinstance(m, dict) for m in metadata):
        raise damaged(d, f"{METADATA_FILE} is not a list of dicts")
    if len(metadata) != count:
        raise damaged(d, f"{METADATA_FILE} has {len(metadata)} entries, but the manifest says {count}")

    params = manifest.get("params")
    if params is not None and not isinstance(params, dict):
        raise damaged(d, f"{MANIFEST_FILE} has a non-dict params entry")
    tuning = manifest.get("tuning")
    if tuning is not None and not isinstance(tuning, dict):
        raise damaged(d, f"{MANIFEST_FILE} has a non-dict tuning entry")
    created = manifest.get("created_at")
    return StoredIndex(
        kind=spec.name,
        metric=manifest.get("metric"),
        dim=dim,
        count=count,
        normalize=bool(manifest.get("normalize", False)),
        params=params,
        info=info,
        created_at=created if isinstance(created, str) else None,
        vectors=np.ascontiguousarray(vectors),
        metadata=metadata,
        state_files={name: (d / name).read_bytes() for name in sha if name not in (VECTORS_FILE, METADATA_FILE)},
        tuning=tuning,
    )


def read_search_settings(directory: str | Path) -> dict[str, Any]:
    """The search settings of an index folder, from its manifest alone (no vectors are read).

    Args:
        directory: the index folder.

    Returns:
        The dict of :func:`~sarbridge.retrieval.index.settings.search_settings`.

    Raises:
        DataError: the folder or its manifest is missing or is not a supported ``sarbridge-index``,
            or its params / tuning entries are not dicts.
    """
    d = Path(directory)
    manifest = _read_manifest(d)
    params, tuning = manifest.get("params") or {}, manifest.get("tuning")
    if not isinstance(params, dict) or (tuning is not None and not isinstance(tuning, dict)):
        raise damaged(d, f"{MANIFEST_FILE} has a non-dict params or tuning entry")
    sha = manifest.get("sha256")
    trained = isinstance(sha, dict) and FAISS_STATE_FILE in sha
    return search_settings(str(manifest.get("kind")), params, tuning, trained=trained)
