"""``sarbridge index build|query``: a tiny trained model, flat gallery index, JSON output and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarbridge.app.cli import main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, hoss_sample_root) -> Path:
    """One epoch of a 1-block ViT on the embedded HOSS sample (a few seconds on CPU)."""
    from sarbridge.tasks.reid.task import train_reid
    from tiny_setup import tiny_config

    out = tmp_path_factory.mktemp("run")
    train_reid(tiny_config(hoss_sample_root, epochs=1), out, progress=False, evaluate_test=False)
    ckpt = out / "best.pt"
    if not ckpt.is_file():
        ckpt = out / "last.pt"
    return ckpt


@pytest.fixture(scope="module")
def built_index(tiny_checkpoint, hoss_sample_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "gallery"
    code = main(["index", "build", "--model", str(tiny_checkpoint), "--data", str(hoss_sample_root),
                 "--out", str(out), "--kind", "flat", "--device", "cpu", "--quiet"])
    assert code == 0
    return out


def test_build_and_query_json(built_index, tiny_checkpoint, hoss_sample_root, capsys):
    capsys.readouterr()
    manifest = json.loads((built_index / "manifest.json").read_text())
    gallery = sorted((hoss_sample_root / "bounding_box_test").iterdir())
    assert manifest["count"] == len(gallery) and manifest["kind"] == "flat"
    assert manifest["info"]["task"] == "reid" and manifest["info"]["checkpoint"] == str(tiny_checkpoint.resolve())
    query = sorted((hoss_sample_root / "query").glob("*_SAR.tif"))[0]
    assert main(["index", "query", "--index", str(built_index), "--query", str(query), "-k", "5",
                 "--json", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"] == str(query) and res["modality"] == "sar"
    results = res["results"]
    assert len(results) == 5 and [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    names = {p.name for p in gallery}
    for r in results:
        assert isinstance(r["id"], int) and r["modality"] in ("optical", "sar") and Path(r["path"]).name in names
    # Table output, explicit modality.
    assert main(["index", "query", "--index", str(built_index), "--query", str(query), "-k", "3",
                 "--modality", "SAR", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"query: {query} (sar)") and len(out.strip().splitlines()) == 3 + 3
    assert out.splitlines()[1] == "search: flat, exact search"
    assert res["search"] == {"kind": "flat", "exact": True, "tuned": None}


def test_build_with_target_recall_stores_the_tuning(tiny_checkpoint, hoss_sample_root, tmp_path, capsys):
    out = tmp_path / "tuned"
    args = ["index", "build", "--model", str(tiny_checkpoint), "--data", str(hoss_sample_root),
            "--out", str(out), "--kind", "ivfsq", "--device", "cpu", "--quiet"]
    assert main([*args, "--target-recall", "1.5"]) == 2
    assert "target recall must be a number in (0, 1], got 1.5" in _one_error_line(capsys)
    assert not (out / "manifest.json").exists()
    assert main([*args, "--target-recall", "0.9"]) == 0
    printed = capsys.readouterr().out
    tuning = json.loads((out / "manifest.json").read_text())["tuning"]
    assert tuning["target_recall"] == 0.9 and tuning["k"] == 10 and tuning["kind"] == "ivfsq"
    assert tuning["reached"] is True and tuning["recall_at_k"] >= 0.9
    assert "search: ivfsq" in printed and "(tuned: recall@10" in printed


def test_query_errors(built_index, hoss_sample_root, tmp_path, capsys):
    query = sorted((hoss_sample_root / "query").iterdir())[0]
    assert main(["index", "query", "--index", str(built_index), "--query", str(query), "--modality", "lidar"]) == 2
    assert "unknown modality 'lidar'" in _one_error_line(capsys)
    odd = tmp_path / "ship.tif"
    odd.write_bytes(query.read_bytes())
    assert main(["index", "query", "--index", str(built_index), "--query", str(odd)]) == 2
    assert "--modality" in _one_error_line(capsys)


def test_rebuild_needs_overwrite(built_index, tiny_checkpoint, hoss_sample_root, capsys):
    args = ["index", "build", "--model", str(tiny_checkpoint), "--data", str(hoss_sample_root),
            "--out", str(built_index), "--device", "cpu", "--quiet"]
    assert main(args) == 2
    assert "already holds an index" in _one_error_line(capsys)


def test_changed_checkpoint_is_refused(tiny_checkpoint, hoss_sample_root, tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(ckpt), "--data", str(hoss_sample_root), "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    with ckpt.open("ab") as fh:
        fh.write(b"\0")  # same path, different bytes
    capsys.readouterr()
    query = sorted((hoss_sample_root / "query").iterdir())[0]
    assert main(["index", "query", "--index", str(out), "--query", str(query), "--device", "cpu"]) == 2
    assert "built with another model" in _one_error_line(capsys)
