"""``sarbridge report RUN_DIR`` and the demos ending with the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarbridge.app.cli import main
from tiny_setup import tiny_overrides


def fake_run(folder: Path, rankings: bool = False) -> Path:
    """A run folder evaluated before rankings.json existed: metrics (with CMC), log, config."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"all2all": {"mAP": 41.25, "R1": 50.0, "R5": 75.0, "R10": 100.0, "mINP": 12.5, "queries": 4},
               "cmc": {"all2all": [0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 1.0]},
               "meta": {"device": "cpu", "checkpoint": "best.pt"}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "train_log.jsonl").write_text(json.dumps({"epoch": 0, "lr": 0.1, "loss": 2.0}) + "\n")
    (folder / "config.yaml").write_text("name: old_run\n")
    return folder


def test_report_prints_the_path_of_report_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path / "run")
    assert main(["report", str(run), "--samples", "2", "--worst", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(run / "report.html") and Path(out).is_file()
    page = Path(out).read_text()
    metrics = json.loads((run / "metrics.json").read_text())["all2all"]
    for key in ("R1", "R5", "R10", "mAP", "mINP"):  # one decimal: 41.25 is shown as 41.2 (round half to even)
        assert f"<td>{metrics[key]:.1f}</td>" in page, key
    assert "<td>41.2</td>" in page
    assert "Ranked lists are unavailable" in page  # evaluated before rankings.json existed


def test_missing_metrics_is_one_line_error_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ")
    assert str(tmp_path) in err and "no metrics.json" in err and "run sarbridge train/eval first" in err
    assert not (tmp_path / "report.html").exists()


def test_missing_folder_and_bad_counts_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err
    run = fake_run(tmp_path / "run")
    assert main(["report", str(run), "--worst", "-2"]) == 2
    assert "--worst" in capsys.readouterr().err


def test_demo_ends_by_writing_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo", "--out", str(tmp_path / "demo"), "--quiet"]
    for o in tiny_overrides(epochs=1):
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = tmp_path / "demo" / "report.html"
    assert f"report: {report}" in out and report.is_file()
    page = report.read_text()
    assert "Ranked lists are unavailable" not in page and "worst queries (lowest AP)" in page
    assert (tmp_path / "demo" / "rankings.json").is_file()
    # the demo measured the modality gap before the report, so the report shows it
    analysis = json.loads((tmp_path / "demo" / "analysis.json").read_text())
    assert set(analysis["stages"]) == {"before", "after"} and (tmp_path / "demo" / "modality_gap.png").is_file()
    assert 'id="analysis"' in page and "linear_probe_acc" in page


def test_train_writes_the_report_unless_told_not_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sarbridge.resources import resource_path

    base = ["train", "--config", str(resource_path("demo.yaml")), "--quiet"]
    sets = [a for o in tiny_overrides(epochs=1) for a in ("--set", o)]
    assert main([*base, "--out", str(tmp_path / "a"), *sets]) == 0
    assert f"report: {tmp_path / 'a' / 'report.html'}" in capsys.readouterr().out
    assert (tmp_path / "a" / "report.html").is_file()
    assert main([*base, "--out", str(tmp_path / "b"), "--no-report", *sets]) == 0
    assert "report:" not in capsys.readouterr().out and not (tmp_path / "b" / "report.html").exists()


@pytest.mark.slow
def test_geo_demo_ends_by_writing_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["data.patch_size=32", "data.image_size=[32,32]", "data.queries=120", "data.batch_size=16",
            "model.embed_dim=32", "loss.wasserstein.hidden=16", "optim.epochs=1", "refine.epochs=1", "matcher.steps=4", "matcher.batch_size=4",
            "refine.hidden=16", "refine.heads=2", "eval.batch_size=64"]
    args = ["geo", "demo", "--out", str(tmp_path / "g"), "--size", "256", "--quiet", "--device", "cpu"]
    for o in tiny:
        args += ["--set", o]
    assert main(args) == 0
    report = tmp_path / "g" / "report.html"
    assert f"report: {report}" in capsys.readouterr().out
    page = report.read_text()
    assert "+ graph refinement" in page and "coarse/train_log.jsonl" in page
    assert any((tmp_path / "g" / "thumbs").iterdir())


def test_demo_commands_analyse_and_report_after_the_demo_in_the_old_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The demos only train and evaluate; the command then analyses, writes the report and prints, in the
    order the demos printed before (geo: the example line comes after the analysis, before the table)."""
    import sarbridge.app.cli.geo as cli_geo
    import sarbridge.app.cli.reid as cli_reid
    import sarbridge.tasks.geo.demo as geo_demo
    import sarbridge.tasks.reid.demo as reid_demo

    calls = []

    def finish(out, metrics, progress=True):
        calls.append((Path(out), metrics["meta"]["device"], progress))
        print("ANALYSED")
        return Path(out) / "report.html"

    example = {"query": "q.tif", "lon": 4.5, "lat": 51.25, "error_m": None, "error_radius_m": 12.34}
    geo_metrics = {"coarse": {"top1": 10.0, "queries": 5}, "meta": {"device": "cpu"}, "example": example}
    monkeypatch.setattr(geo_demo, "run_geo_demo", lambda out, **kw: dict(geo_metrics))
    monkeypatch.setattr(cli_geo, "finish_demo", finish)
    assert main(["geo", "demo", "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    order = [out.index(t) for t in ("ANALYSED", "example: q.tif located at lon 4.500000, lat 51.250000 "
                                    "(error nan m, radius 12.3 m)", "| coarse retrieval | 10.0", "results: ",
                                    f"report: {tmp_path / 'g' / 'report.html'}")]
    assert order == sorted(order) and calls == [(tmp_path / "g", "cpu", True)]
    assert main(["geo", "demo", "--out", str(tmp_path / "g"), "--quiet"]) == 0
    assert "example:" not in capsys.readouterr().out and calls[-1][2] is False

    reid_metrics = {"all2all": {"mAP": 1.0, "queries": 2}, "protocol_source": "derived", "meta": {"device": "cpu"}}
    monkeypatch.setattr(reid_demo, "run_demo", lambda out, **kw: dict(reid_metrics))
    monkeypatch.setattr(cli_reid, "finish_demo", finish)
    assert main(["demo", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    order = [out.index(t) for t in ("ANALYSED", "| ALL->ALL | 1.0", "protocols: derived", "results: ",
                                    f"report: {tmp_path / 'r' / 'report.html'}")]
    assert order == sorted(order)

