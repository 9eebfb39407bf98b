"""Tests for sarbridge.retrieval.index.EmbeddingIndex: search, metadata and the on-disk format."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from sarbridge.core.errors import DataError, SarbridgeError
from sarbridge.retrieval import index as index_mod
from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.index import EmbeddingIndex, IndexKind, available_kinds, register_kind
from sarbridge.retrieval.index import format as format_mod
from sarbridge.retrieval.index import gpu as gpu_mod
from sarbridge.retrieval.index import kinds as kinds_mod
from sarbridge.retrieval.index import stores as stores_mod

BACKENDS = ["faiss", "torch"]


def unit(seed, n, dim=16):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(gallery, queries, k):
    s = queries.astype(np.float64) @ gallery.astype(np.float64).T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids


def meta(start, n):
    return [{"id": f"ref{i}", "modality": "optical", "x": float(i), "y": -float(i)} for i in range(start, start + n)]


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_search_matches_brute_force_with_incremental_adds(backend):
    g, q = unit(0, 300), unit(1, 23)
    index = EmbeddingIndex(16, backend=backend)
    assert index.backend == backend and len(index) == 0
    ids0 = index.add(g[:120], meta(0, 120))
    ids1 = index.add(torch.from_numpy(g[120:]), meta(120, 180))
    np.testing.assert_array_equal(np.concatenate([ids0, ids1]), np.arange(300))
    assert len(index) == index.ntotal == 300 and len(index.metadata) == 300
    scores, ids = index.search(q, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and scores.shape == ids.shape == (23, 10)
    want_s, want_i = brute_force(g, q, 10)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    assert index.metadata[int(ids[0, 0])]["id"] == f"ref{int(ids[0, 0])}"
    np.testing.assert_array_equal(index.embeddings(), g)


def test_faiss_and_torch_agree_and_torch_chunking_is_exact(monkeypatch):
    g, q = unit(2, 500, dim=8), unit(3, 37, dim=8)
    results = []
    for backend in BACKENDS:
        index = EmbeddingIndex(8, backend=backend)
        index.add(g)
        results.append(index.search(q, 12))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-5)
    # Tiny blocks: many query chunks and gallery chunks merged by running top-k.
    monkeypatch.setattr(stores_mod, "CHUNK_PAIRS", 64)
    index = EmbeddingIndex(8, backend="torch")
    index.add(g)
    for k in (1, 12, 500):
        s, i = index.search(q, k)
        want_s, want_i = brute_force(g, q, k)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(s, want_s, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_is_clamped_ties_are_ordered_by_id_and_empty_queries_work(backend):
    index = EmbeddingIndex(3, backend=backend)
    e = np.eye(3, dtype=np.float32)
    index.add(np.stack([e[1], e[0], e[1], e[2], e[1]]))  # ids 0, 2, 4 are identical
    scores, ids = index.search(e[1:2], k=50)
    assert ids.shape == (1, 5)
    np.testing.assert_array_equal(ids[0, :3], [0, 2, 4])
    np.testing.assert_allclose(scores[0], [1, 1, 1, 0, 0])
    s0, i0 = index.search(np.zeros((0, 3), dtype=np.float32), k=2)
    assert s0.shape == i0.shape == (0, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_flag(backend):
    x = unit(4, 50) * np.random.default_rng(5).uniform(0.5, 3.0, size=(50, 1)).astype(np.float32)
    q = unit(6, 4) * 7.0
    index = EmbeddingIndex(16, backend=backend, normalize=True)
    index.add(x)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings(), axis=1), 1.0, atol=1e-6)
    scores, ids = index.search(q, 5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    want_s, want_i = brute_force(xn, q / 7.0, 5)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)


def test_metadata_is_copied_and_normalised_to_json():
    index = EmbeddingIndex(2, backend="torch")
    m = [{"id": 1, "xy": (1, 2), "lat": np.float32(0.5), "arr": np.arange(2)}, {}]
    index.add(np.eye(2, dtype=np.float32), m)
    m[0]["id"] = 99
    assert index.metadata == [{"id": 1, "xy": [1, 2], "lat": 0.5, "arr": [0, 1]}, {}]
    index.add(np.eye(2, dtype=np.float32))
    assert index.metadata[2:] == [{}, {}]


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "embeddings, metadata, match",
    [
        (np.ones((2, 5)), None, "dimension 5, but the index has dimension 4"),
        (np.ones(4), None, "2-D"),
        (np.array([[0, 1, 2, np.nan], [0, 0, 0, 1]]), None, "NaN values .*first row 0"),
        (np.array([[0, 0, 0, 1], [0, 1, 2, np.inf]]), None, "infinite values .*first row 1"),
        (np.array([[0, 0, 0, 1e39]]), None, "infinite"),  # overflows float32
        (np.array([["a"] * 4]), None, "real numbers"),
        (np.ones((2, 4)), [{}], "2 embeddings but 1 metadata"),
        (np.ones((1, 4)), {"id": 1}, "list with one dict"),
        (np.ones((1, 4)), ["x"], "metadata\\[0\\] must be a dict"),
        (np.ones((1, 4)), [{"f": object()}], "metadata\\[0\\] is not JSON-serialisable"),
        (np.ones((1, 4)), [{"lat": float("nan")}], "not JSON-serialisable"),
    ],
)
def test_add_rejects_bad_input(embeddings, metadata, match):
    index = EmbeddingIndex(4, backend="torch")
    with pytest.raises(RetrievalInputError, match=match):
        index.add(embeddings, metadata)
    assert len(index) == 0 and index.metadata == []  # nothing half-added


def test_search_errors():
    index = EmbeddingIndex(4)
    with pytest.raises(RetrievalInputError, match="empty index"):
        index.search(np.ones((1, 4)), 3)
    index.add(np.eye(4))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.ones((1, 4)), 0)
    with pytest.raises(ValueError, match="reshape"):
        index.search(np.ones(4), 1)
    with pytest.raises(ValueError, match="dimension 3"):
        index.search(np.ones((1, 3)), 1)


def test_constructor_errors():
    with pytest.raises(ValueError, match="dimension must be a positive integer"):
        EmbeddingIndex(0)
    with pytest.raises(ValueError, match="unknown index kind 'ivf'"):
        EmbeddingIndex(4, kind="ivf")
    with pytest.raises(ValueError, match="does not support metric 'l2'"):
        EmbeddingIndex(4, metric="l2")
    with pytest.raises(ValueError, match="unknown index backend"):
        EmbeddingIndex(4, backend="cuda")


def test_auto_falls_back_to_torch_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    assert not index_mod.faiss_available()
    index = EmbeddingIndex(4)
    assert index.backend == "torch"
    index.add(np.eye(4))
    assert index.search(np.eye(4)[:1], 1)[1][0, 0] == 0
    with pytest.raises(SarbridgeError, match="faiss cannot be imported"):
        EmbeddingIndex(4, backend="faiss")


def test_kind_registry():
    assert "flat" in available_kinds()

    class Doubling(stores_mod.TorchFlatStore):  # a toy kind: scores are doubled
        def search(self, queries, k):
            s, i = super().search(queries, k)
            return 2 * s, i

    kind = IndexKind("toy-double", ("ip",), {"torch": Doubling}, "test only")
    register_kind(kind)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_kind(kind)
        index = EmbeddingIndex(2, kind="toy-double")
        assert index.backend == "torch"  # the kind has no faiss store
        index.add(np.eye(2))
        assert index.search(np.eye(2)[:1], 1)[0][0, 0] == pytest.approx(2.0)
        with pytest.raises(ValueError, match="no 'faiss' backend"):
            EmbeddingIndex(2, kind="toy-double", backend="faiss")
    finally:
        kinds_mod._KINDS.pop("toy-double")
    with pytest.raises(ValueError, match="unknown backend"):
        register_kind(IndexKind("bad", ("ip",), {"gpu": Doubling}))


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("save_backend, load_backend", [("faiss", "torch"), ("torch", "faiss"), ("faiss", "auto")])
def test_save_load_round_trip(tmp_path, save_backend, load_backend):
    g, q = unit(7, 64), unit(8, 5)
    index = EmbeddingIndex(16, backend=save_backend, info={"checkpoint_sha256": "ab" * 32})
    index.add(g, meta(0, 64))
    out = index.save(tmp_path / "idx", info={"crs": "EPSG:32650"})
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "metadata.json", "vectors.npy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "sarbridge-index" and manifest["version"] == 1
    assert (manifest["kind"], manifest["metric"], manifest["dim"], manifest["count"]) == ("flat", "ip", 16, 64)
    assert manifest["backend"] == save_backend and manifest["normalize"] is False
    assert set(manifest["sha256"]) == {"vectors.npy", "metadata.json"}
    assert manifest["info"] == {"checkpoint_sha256": "ab" * 32, "crs": "EPSG:32650"}
    assert manifest["created_at"] == index.created_at and manifest["created_at"].endswith("+00:00")

    loaded = EmbeddingIndex.load(out, backend=load_backend)
    assert len(loaded) == 64 and loaded.dim == 16 and loaded.kind == "flat"
    assert loaded.info == manifest["info"] and loaded.created_at == index.created_at
    assert loaded.metadata == index.metadata
    np.testing.assert_array_equal(loaded.embeddings(), g)
    s0, i0 = index.search(q, 7)
    s1, i1 = loaded.search(q, 7)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_allclose(s0, s1, atol=1e-6)
    # The loaded index keeps growing and saves again over the old files.
    loaded.add(unit(9, 3), meta(64, 3))
    loaded.save(out)
    again = EmbeddingIndex.load(out)
    assert len(again) == 67 and again.metadata[-1]["id"] == "ref66"


def test_empty_and_normalized_indexes_round_trip(tmp_path):
    EmbeddingIndex(5, normalize=True).save(tmp_path / "e")
    loaded = EmbeddingIndex.load(tmp_path / "e")
    assert len(loaded) == 0 and loaded.normalize and loaded.embeddings().shape == (0, 5)
    with pytest.raises(RetrievalInputError, match="empty index"):
        loaded.search(np.ones((1, 5)), 1)


def saved(tmp_path):
    index = EmbeddingIndex(4, backend="torch")
    index.add(unit(10, 6, dim=4), meta(0, 6))
    return index.save(tmp_path / "idx")


def edit_manifest(path, **changes):
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


def test_load_detects_changed_vectors(tmp_path):
    d = saved(tmp_path)
    raw = bytearray((d / "vectors.npy").read_bytes())
    raw[-1] ^= 0x01  # one flipped bit in the last float
    (d / "vectors.npy").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="is damaged: checksum of vectors.npy does not match its manifest") as e:
        EmbeddingIndex.load(d)
    assert str(d) in e.value.message and "rebuild" in e.value.hint


def test_load_detects_changed_metadata(tmp_path):
    d = saved(tmp_path)
    (d / "metadata.json").write_text((d / "metadata.json").read_text().replace("ref3", "ref9"))
    with pytest.raises(DataError, match="checksum of metadata.json does not match"):
        EmbeddingIndex.load(d)


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: (d / "manifest.json").unlink(), "incomplete: manifest.json is missing"),
        (lambda d: (d / "vectors.npy").unlink(), "damaged: vectors.npy is missing"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json cannot be read"),
        (lambda d: edit_manifest(d, format="something-else"), "not a sarbridge index"),
        (lambda d: edit_manifest(d, version=2), "format version 2"),
        (lambda d: edit_manifest(d, count=7), "shape \\(6, 4\\), but the manifest says float32 \\(7, 4\\)"),
        (lambda d: edit_manifest(d, dim=5), "but the manifest says float32 \\(6, 5\\)"),
        (lambda d: edit_manifest(d, kind="lsh"), "kind 'lsh'"),
        (lambda d: edit_manifest(d, sha256={"vectors.npy": "0"}), "no valid sha256 table"),
        (lambda d: edit_manifest(d, sha256={"vectors.npy": "0", "metadata.json": "0", "../x": "0"}),
         "no valid sha256 table"),
    ],
)
def test_load_refuses_damaged_indexes(tmp_path, damage, match):
    d = saved(tmp_path)
    damage(d)
    with pytest.raises(DataError, match=match):
        EmbeddingIndex.load(d)


def test_load_checks_metadata_count_even_with_matching_checksum(tmp_path):
    import hashlib

    d = saved(tmp_path)
    text = json.dumps([{"id": "only-one"}])
    (d / "metadata.json").write_text(text)
    m = json.loads((d / "manifest.json").read_text())
    m["sha256"]["metadata.json"] = hashlib.sha256(text.encode()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="metadata.json has 1 entries, but the manifest says 6"):
        EmbeddingIndex.load(d)


def test_load_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        EmbeddingIndex.load(tmp_path / "nope")


def test_interrupted_save_is_reported_as_incomplete(tmp_path, monkeypatch):
    d = saved(tmp_path)
    index = EmbeddingIndex.load(d)
    index.add(unit(11, 2, dim=4))

    def boom(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(format_mod, "atomic_write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save(d)
    assert not any(p.name.endswith(".tmp") for p in d.iterdir())
    with pytest.raises(DataError, match="incomplete"):
        EmbeddingIndex.load(d)


def test_save_refuses_desynchronised_metadata(tmp_path):
    index = EmbeddingIndex(4)
    index.add(np.eye(4))
    index.metadata.append({"stray": True})
    with pytest.raises(DataError, match="4 vectors but 5 metadata"):
        index.save(tmp_path / "x")
    with pytest.raises(RetrievalInputError, match="info is not JSON-serialisable"):
        EmbeddingIndex(4).save(tmp_path / "y", info={"bad": {1, 2}})


# --------------------------------------------------------------------------------------------
# Approximate kinds (faiss): recall, training, persistence
# --------------------------------------------------------------------------------------------
APPROX = {"ivfpq": {"nlist": 16, "m": 8}, "ivfsq": {"nlist": 16}, "hnsw": {}}


def clustered(seed, n, dim=32, clusters=50):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at(approx_ids, exact_ids):
    k = exact_ids.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(approx_ids, exact_ids)]))


@pytest.fixture(scope="module")
def recall_data():
    pytest.importorskip("faiss")
    g, q = clustered(0, 5000), clustered(1, 200)
    flat = EmbeddingIndex(32, backend="faiss")
    flat.add(g)
    built = {}
    for kind, params in APPROX.items():
        index = EmbeddingIndex(32, kind=kind, params=params)
        index.add(g[:3000], meta(0, 3000))
        index.add(g[3000:], meta(3000, 2000))  # incremental add after (auto) training
        built[kind] = index
    return g, q, flat.search(q, 10)[1], built


@pytest.mark.parametrize("kind, threshold", [("ivfpq", 0.8), ("ivfsq", 0.9), ("hnsw", 0.95)])
def test_approximate_recall_against_flat(recall_data, kind, threshold):
    _, q, exact, built = recall_data
    index = built[kind]
    assert index.kind == kind and len(index) == 5000 and index.is_trained
    scores, ids = index.search(q, 10)
    r = recall_at(ids, exact)
    print(f"recall@10 {kind}: {r:.3f}")  # observed: ivfpq 0.896 (nprobe 16, rerank 4), ivfsq 1.0, hnsw 0.97
    assert r >= threshold
    assert (np.diff(scores, axis=1) <= 0).all() and (ids >= 0).all()


def test_ivfpq_params_training_and_nprobe(recall_data):
    g, q, exact, built = recall_data
    index = built["ivfpq"]
    assert index.params == {"nlist": 16, "m": 8, "nbits": 8, "nprobe": 16, "rerank": 4}
    index.set_search_params(nprobe=1)
    low = recall_at(index.search(q, 10)[1], exact)
    index.set_search_params(nprobe=16)
    high = recall_at(index.search(q, 10)[1], exact)
    assert index.params["nprobe"] == 16 and high >= low and high > 0.5
    with pytest.raises(RetrievalInputError, match="no search parameter ef_search"):
        index.set_search_params(ef_search=10)
    with pytest.raises(RetrievalInputError, match="already trained"):
        index.train(g[:300])
    # Few vectors: nlist is lowered to N // 39 and recorded; below 2**nbits the index stays untrained
    # and answers exactly.
    small = EmbeddingIndex(32, kind="ivfpq", params={"nlist": 64})
    small.add(g[:100])
    assert not small.is_trained
    np.testing.assert_array_equal(small.search(q[:5], 3)[1], brute_force(g[:100], q[:5], 3)[1])
    small.add(g[100:400])
    assert small.is_trained and small.params["nlist"] == 400 // 39
    auto = EmbeddingIndex(32, kind="ivfpq")
    auto.train(g[:2000])
    # "auto" asks for round(4 * sqrt(2000)) = 179 lists; 2000 vectors support 2000 // 39 = 51.
    assert auto.params["nlist"] == 51 and auto.params["m"] == 2 and len(auto) == 0
    auto.add(g[:10])
    assert auto.search(g[:1], 1)[1][0, 0] == 0
    with pytest.raises(RetrievalInputError, match="dividing the dimension 32"):
        EmbeddingIndex(32, kind="ivfpq", params={"m": 5})
    with pytest.raises(RetrievalInputError, match="has no parameter 'M'"):
        EmbeddingIndex(32, kind="ivfpq", params={"M": 5})
    with pytest.raises(RetrievalInputError, match="no search parameter nprobe"):
        EmbeddingIndex(4).set_search_params(nprobe=3)


@pytest.mark.parametrize("kind", list(APPROX))
def test_approximate_round_trip_and_tampered_state(recall_data, tmp_path, kind):
    _, q, _, built = recall_data
    index = built[kind]
    if kind == "hnsw":
        index.set_search_params(ef_search=32)
    out = index.save(tmp_path / kind, info={"note": kind})
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["sha256"]) == {"vectors.npy", "metadata.json", "index.faiss"}
    assert manifest["params"] == index.params
    loaded = EmbeddingIndex.load(out)
    assert loaded.kind == kind and loaded.params == index.params and loaded.metadata == index.metadata
    np.testing.assert_array_equal(loaded.embeddings(), index.embeddings())
    s0, i0 = index.search(q, 10)
    s1, i1 = loaded.search(q, 10)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(s0, s1)
    loaded.add(clustered(5, 10), meta(5000, 10))  # keeps growing after load
    assert len(loaded) == 5010 and loaded.search(loaded.embeddings()[-1:], 1)[1][0, 0] == 5009

    raw = bytearray((out / "index.faiss").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (out / "index.faiss").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum of index.faiss does not match"):
        EmbeddingIndex.load(out)


def test_corrupt_state_with_matching_checksum_is_refused(tmp_path):
    import hashlib

    pytest.importorskip("faiss")
    index = EmbeddingIndex(8, kind="hnsw")
    index.add(unit(12, 20, dim=8))
    d = index.save(tmp_path / "h")
    junk = b"not a faiss index"
    (d / "index.faiss").write_bytes(junk)
    edit_manifest(d, sha256={**json.loads((d / "manifest.json").read_text())["sha256"],
                             "index.faiss": hashlib.sha256(junk).hexdigest()})
    with pytest.raises(DataError, match="'hnsw' search structure cannot be restored"):
        EmbeddingIndex.load(d)


@pytest.mark.parametrize("kind", list(APPROX))
def test_approximate_kinds_need_faiss(monkeypatch, kind):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(SarbridgeError, match=f"index kind '{kind}' needs faiss") as e:
        EmbeddingIndex(16, kind=kind)
    assert "pip install faiss-cpu" in e.value.hint and "kind=flat" in e.value.hint
    assert EmbeddingIndex(16).backend == "torch"  # flat still works


def test_faiss_gpu_backend_without_gpu_is_refused():
    pytest.importorskip("faiss")
    if gpu_mod.faiss_num_gpus() > 0:
        pytest.skip("a faiss GPU is present")
    assert not EmbeddingIndex(4, kind="ivfpq").gpu
    with pytest.raises(SarbridgeError, match="faiss-gpu"):
        EmbeddingIndex(4, backend="faiss-gpu")


@pytest.mark.parametrize("kind, backend", [("flat", "faiss"), ("flat", "torch"), ("ivfpq", "auto"), ("hnsw", "auto")])
def test_embedding_rows_equal_the_full_copy(kind, backend):
    x = clustered(0, 600)
    params = {"nlist": 4, "m": 4} if kind == "ivfpq" else None
    index = EmbeddingIndex(32, kind=kind, backend=backend, params=params)
    index.add(x)
    ids = np.array([5, 0, 599, 5])
    np.testing.assert_array_equal(index.embeddings(ids), index.embeddings()[ids])
    assert index.embeddings([]).shape == (0, 32)
    with pytest.raises(RetrievalInputError, match="ids must be in"):
        index.embeddings([600])
