"""`--mlflow` mirrors a study into MLflow, read back with MlflowClient: the study run with its
spec and fits, a run per rung with its curve by step and final measurements, a run per variant,
and the report as an artifact. An unknown scheme is bad input; an MLflow that does not answer
leaves the study to finish, with one warning."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import scalelab, scalelab_each, tiny_spec, write_spec


def _spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "m.yaml", tiny_spec(
        name="mirror", ladder={"sizes": [3.0e3, 1.2e4, 3.0e4, 6.0e4]},
        train={"tokens": 16_000, "eval_every": 20, "checkpoint_every": 40}))


def _curves(folder: Path) -> dict[int, list[tuple[int, float]]]:
    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    out: dict[int, list] = {}
    for rung, step, val in conn.execute("SELECT rung, step, val_loss FROM curves ORDER BY step"):
        out.setdefault(rung, []).append((step, val))
    conn.close()
    return out


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory) -> tuple[Path, MlflowClient]:
    root = tmp_path_factory.mktemp("mlflow")
    spec = _spec(root)
    scalelab("run", spec, "--out", root / "s", "--mlflow", root / "tracking", check=True)
    scalelab("compress", root / "s", "--methods", "fp16", "--mlflow", root / "tracking",
             check=True)
    return root / "s", MlflowClient(f"sqlite:///{root / 'tracking' / 'mlflow.db'}")


def _runs(client: MlflowClient) -> dict[str, object]:
    exp = client.get_experiment_by_name("mirror")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


@pytest.mark.slow
def test_the_study_run_holds_the_spec_the_fits_and_the_report(mirrored):
    folder, client = mirrored
    runs = _runs(client)
    study = runs["mirror"]
    summary = json.loads((folder / "summary.json").read_text())
    assert study.info.status == "FINISHED"
    assert float(study.data.params["train.tokens"]) == 16_000
    assert study.data.params["ladder.sizes"] == json.dumps([3.0e3, 1.2e4, 3.0e4, 6.0e4])
    (fit,) = summary["fits"]
    assert study.data.metrics["fit.power.val_loss.alpha"] == pytest.approx(fit["params"]["alpha"])
    assert study.data.metrics["fit.power.val_loss.holdout_rel_error"] == pytest.approx(
        fit["holdout"]["rel_error"])
    artifacts = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"report.html", "summary.json", "runs.csv", "fits.json"} <= artifacts
    local = client.download_artifacts(study.info.run_id, "report.html", str(folder.parent))
    assert Path(local).read_text() == (folder / "report.html").read_text()


@pytest.mark.slow
def test_each_rung_has_its_curve_by_step_and_its_measurements(mirrored):
    folder, client = mirrored
    runs = _runs(client)
    summary = json.loads((folder / "summary.json").read_text())
    curves = _curves(folder)
    for rung in summary["rungs"]:
        run = runs[f"rung-{rung['rung']}"]
        assert run.data.tags["mlflow.parentRunId"] == runs["mirror"].info.run_id
        assert run.info.status == "FINISHED"
        assert int(run.data.params["n_nonembed"]) == rung["n_nonembed"]
        assert float(run.data.params["lr"]) == pytest.approx(rung["lr"])
        assert run.data.metrics["val_loss"] == pytest.approx(rung["val_loss"])
        assert run.data.metrics["flops"] == pytest.approx(rung["flops"])
        history = client.get_metric_history(run.info.run_id, "curve/val_loss")
        logged = sorted((m.step, m.value) for m in history)
        assert logged == [(s, pytest.approx(v)) for s, v in curves[rung["rung"]]]


@pytest.mark.slow
def test_a_variant_has_its_run(mirrored):
    folder, client = mirrored
    runs = _runs(client)
    (variant,) = json.loads((folder / "summary.json").read_text())["variants"]
    run = runs[variant["name"]]
    assert run.data.params["method"] == variant["method"]
    assert run.data.metrics["val_loss"] == pytest.approx(variant["val_loss"])
    assert run.data.metrics["bytes"] == variant["bytes"]


@pytest.fixture(scope="module")
def unmirrored(tmp_path_factory) -> dict[str, tuple]:
    """`run --mlflow` with an unknown scheme, and with an MLflow server that does not answer (a
    1-rung study), each in a folder of its own (`scalelab_each`: one process each): {case:
    (process, its --out folder)}."""
    unknown, silent = tmp_path_factory.mktemp("unknown"), tmp_path_factory.mktemp("silent")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    one = write_spec(silent / "one.yaml", tiny_spec(ladder={"sizes": [3.0e3]},
                                                    train={"tokens": 4_000}))
    cases = {"unknown": (["run", _spec(unknown), "--out", unknown / "s", "--mlflow", "foo://bar"],
                         unknown / "s"),
             "silent": (["run", one, "--out", silent / "s", "--mlflow",
                         f"http://127.0.0.1:{port}"], silent / "s")}
    procs = scalelab_each(*[argv for argv, _ in cases.values()], timeout=300)
    return {k: (proc, out) for (k, (_, out)), proc in zip(cases.items(), procs, strict=True)}


def test_an_unknown_scheme_is_one_line_and_writes_nothing(unmirrored):
    proc, out = unmirrored["unknown"]
    assert proc.returncode == 2
    assert "unknown URI scheme 'foo'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_an_mlflow_that_does_not_answer_is_one_warning_and_the_study_goes_on(unmirrored):
    proc, out = unmirrored["silent"]
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "cannot be reached" in line]
    assert len(warnings) == 1, proc.stderr
    assert json.loads((out / "summary.json").read_text())["rungs"][0]["status"] == "done"
