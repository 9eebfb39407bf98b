"""The on-disk format of sarbridge.retrieval.index: documented file names and manifest keys, and
indexes written by the previous (single-module) layout still loading and answering the same queries.

``tests/fixtures/index-v1`` was written by ``sarbridge/retrieval/index.py`` as it was before the
index became a package: four 80-item, 8-dimensional indexes (``flat`` saved with torch,
``flat-normalized`` saved with faiss, ``hnsw``, and a trained ``ivfpq``), the queries
``queries.npy`` and, in ``expected.json``, the top-7 ids and scores that code returned for them
after loading each index, plus its file list and effective parameters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import sarbridge.retrieval.index as index_pkg
from sarbridge.retrieval.index import EmbeddingIndex

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "index-v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
FAISS_KINDS = {"hnsw", "ivfpq"}

# The manifest keys in the order the module docstring documents them ("params" only for kinds with
# parameters).
MANIFEST_KEYS = ["format", "version", "kind", "metric", "dim", "count", "backend", "normalize", "sha256",
                 "created_at", "info"]
MANIFEST_KEYS_WITH_PARAMS = MANIFEST_KEYS[:8] + ["params"] + MANIFEST_KEYS[8:]


def unit(seed, n, dim):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_public_names_are_re_exported_by_the_package():
    expected = {"BACKENDS", "FORMAT", "FORMAT_VERSION", "EmbeddingIndex", "IndexKind", "VectorStore",
                "available_kinds", "faiss_available", "register_kind"}
    assert expected <= set(index_pkg.__all__)
    for name in index_pkg.__all__:
        assert getattr(index_pkg, name) is not None
    assert index_pkg.FORMAT == "sarbridge-index" and index_pkg.FORMAT_VERSION == 1
    assert (index_pkg.MANIFEST_FILE, index_pkg.VECTORS_FILE, index_pkg.METADATA_FILE, index_pkg.FAISS_STATE_FILE) == (
        "manifest.json", "vectors.npy", "metadata.json", "index.faiss")
    assert index_pkg.BACKENDS == ("auto", "faiss", "faiss-gpu", "torch")
    assert set(index_pkg.available_kinds()) >= {"flat", "ivfpq", "hnsw"}


def test_flat_save_writes_the_documented_files_and_manifest(tmp_path):
    x = unit(0, 5, 4)
    index = EmbeddingIndex(4, backend="torch", info={"crs": "EPSG:4326"})
    index.add(x, [{"id": f"p{i}", "x": i} for i in range(5)])
    d = index.save(tmp_path / "flat", info={"model_sha256": "cd" * 32})

    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "metadata.json", "vectors.npy"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert list(manifest) == MANIFEST_KEYS
    assert {k: manifest[k] for k in MANIFEST_KEYS[:8]} == {
        "format": "sarbridge-index", "version": 1, "kind": "flat", "metric": "ip", "dim": 4, "count": 5,
        "backend": "torch", "normalize": False}
    assert manifest["sha256"] == {"vectors.npy": sha256(d / "vectors.npy"),
                                  "metadata.json": sha256(d / "metadata.json")}
    assert manifest["info"] == {"crs": "EPSG:4326", "model_sha256": "cd" * 32}
    # The data files are plain .npy and JSON, readable without sarbridge.
    np.testing.assert_array_equal(np.load(d / "vectors.npy", allow_pickle=False), x)
    assert json.loads((d / "metadata.json").read_text()) == [{"id": f"p{i}", "x": i} for i in range(5)]


@pytest.mark.parametrize("kind, params, state", [
    ("hnsw", {"M": 8}, True),
    ("ivfpq", {"nlist": 1, "m": 2, "nbits": 4}, True),  # 40 >= 2**4 vectors: trained on add
    ("ivfpq", {"nlist": 1, "m": 2, "nbits": 8}, False),  # 40 < 2**8: untrained, no state file
])
def test_faiss_kinds_save_their_state_file_and_params(tmp_path, kind, params, state):
    pytest.importorskip("faiss")
    index = EmbeddingIndex(8, kind=kind, params=params)
    index.add(unit(1, 40, 8))
    d = index.save(tmp_path / kind)
    files = ["manifest.json", "metadata.json", "vectors.npy"] + (["index.faiss"] if state else [])
    assert sorted(p.name for p in d.iterdir()) == sorted(files)
    manifest = json.loads((d / "manifest.json").read_text())
    assert list(manifest) == MANIFEST_KEYS_WITH_PARAMS
    assert manifest["params"] == index.params and params.items() <= manifest["params"].items()
    assert sorted(manifest["sha256"]) == sorted(f for f in files if f != "manifest.json")
    for name, digest in manifest["sha256"].items():
        assert sha256(d / name) == digest


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_indexes_of_the_previous_layout_load_and_answer_the_same(name, tmp_path):
    want = EXPECTED[name]
    if name in FAISS_KINDS:
        pytest.importorskip("faiss")
    assert sorted(p.name for p in (FIXTURE / name).iterdir()) == want["files"]
    queries = np.load(FIXTURE / "queries.npy")
    backends = ["auto"] if name in FAISS_KINDS else ["faiss", "torch"]
    if "faiss" in backends and not index_pkg.faiss_available():
        backends.remove("faiss")
    for backend in backends:
        index = EmbeddingIndex.load(FIXTURE / name, backend=backend)
        assert len(index) == 80 and index.dim == 8 and index.info == {"crs": "EPSG:32633", "note": name}
        assert index.params == want["params"] and index.is_trained == want["trained"]
        assert index.metadata[13] == {"id": "ref13", "x": 130.0, "y": -13.0, "tile": [1, 3]}
        scores, ids = index.search(queries, 7)
        np.testing.assert_array_equal(ids, np.array(want["ids"]))
        np.testing.assert_allclose(scores, np.array(want["scores"], dtype=np.float32), rtol=0, atol=1e-6)

    # Saved again by this layout, the folder holds the same files and the same data.
    index = EmbeddingIndex.load(FIXTURE / name)
    out = index.save(tmp_path / name)
    assert sorted(p.name for p in out.iterdir()) == want["files"]
    for data in ("vectors.npy", "metadata.json"):
        assert (out / data).read_bytes() == (FIXTURE / name / data).read_bytes()
    old = json.loads((FIXTURE / name / "manifest.json").read_text())
    new = json.loads((out / "manifest.json").read_text())
    assert list(new) == list(old)
    assert {k: v for k, v in new.items() if k not in ("created_at", "backend")} == {
        k: v for k, v in old.items() if k not in ("created_at", "backend")}
