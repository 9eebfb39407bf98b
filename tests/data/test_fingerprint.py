"""Tests for sarbridge.data.fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.data.fingerprint import data_fingerprint, fingerprint_difference

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _files(root: Path, names: dict[str, bytes]) -> None:
    for name, data in names.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_digest_is_the_hand_computed_listing(tmp_path: Path) -> None:
    _files(tmp_path, {"train/b.tif": b"12345", "train/a.tif": b"1", "query/q.tif": b"xy"})
    fp = data_fingerprint({"train": [(str(tmp_path / "train/b.tif"), 2), (str(tmp_path / "train/a.tif"), 1)],
                           "query": [(str(tmp_path / "query/q.tif"), -1)], "gallery": []}, root=tmp_path)
    q = b"query\tquery/q.tif\t2\t-1\n"
    t = b"train\ttrain/a.tif\t1\t1\ntrain\ttrain/b.tif\t5\t2\n"
    assert fp["parts"] == {"query": {"digest": hashlib.sha256(q).hexdigest(), "files": 1, "identities": 0},
                           "train": {"digest": hashlib.sha256(t).hexdigest(), "files": 2, "identities": 2}}
    assert fp["digest"] == hashlib.sha256(q + t).hexdigest() and fp["files"] == 3 and fp["identities"] == 2
    assert fp["root"] == str(tmp_path)


def test_differences_in_words(tmp_path: Path) -> None:
    _files(tmp_path, {f"q/{i}.tif": b"x" * (i + 1) for i in range(4)})
    full = data_fingerprint({"query": [(str(tmp_path / f"q/{i}.tif"), i) for i in range(4)]}, root=tmp_path)
    fewer = data_fingerprint({"query": [(str(tmp_path / f"q/{i}.tif"), i) for i in range(2)]}, root=tmp_path)
    assert fingerprint_difference(full, full) is None
    assert fingerprint_difference(full, fewer) == "query: 4 -> 2 identities, 4 -> 2 files"
    (tmp_path / "q/0.tif").write_bytes(b"longer")  # same names, another size
    edited = data_fingerprint({"query": [(str(tmp_path / f"q/{i}.tif"), i) for i in range(4)]}, root=tmp_path)
    assert fingerprint_difference(full, edited) == (f"query: digest {full['parts']['query']['digest'][:12]} -> "
                                                    f"{edited['parts']['query']['digest'][:12]}")
    # only the parts the given data has are compared; a part the training never saw is named
    assert fingerprint_difference({**full, "parts": {**full["parts"], "train": {"digest": "t"}}}, full) is None
    assert fingerprint_difference(fewer, {"parts": {"gallery": {"digest": "g"}}}) == "gallery: not in the training data"


def test_old_checkpoints_have_none_and_nothing_is_said() -> None:
    for path in sorted((FIXTURES / "checkpoint-v1").rglob("*.pt")):
        state = load_checkpoint(path)
        assert "data_fingerprint" not in state
        assert fingerprint_difference(state.get("data_fingerprint"), {"parts": {"query": {"digest": "x"}}}) is None
    assert fingerprint_difference({"digest": "malformed"}, {"parts": {}}) is None
