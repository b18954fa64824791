"""`scalelab run / show / report` through the real entry point, on tiny real ladders."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli_env, scalelab, scalelab_each, tiny_spec, write_spec


def db_rows(folder: Path) -> dict:
    """Every row of every table, to prove a failed command changed nothing."""
    import sqlite3

    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    conn.close()
    return rows


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    spec = write_spec(root / "tiny.yaml", tiny_spec(name="<script>alert(1)</script>"))
    proc = scalelab("run", spec, "--out", root / "s", check=True)
    assert "report:" in proc.stdout
    return root / "s"


def test_run_writes_every_output_with_the_documented_shape(study):
    summary = json.loads((study / "summary.json").read_text())
    s = summary["study"]
    for key in ("name", "task", "family", "machine", "gemm_peak_flops"):
        assert s[key] is not None, key
    assert s["gemm_peak_flops"] > 1e8
    assert s["corpus"]["files"] > 300
    assert len(summary["rungs"]) == 4
    for r in summary["rungs"]:
        assert r["status"] == "done"
        for key in ("rung", "n_params", "n_nonembed", "tokens", "val_loss", "flops", "flops_6nd",
                    "train_seconds", "tokens_per_s", "mfu", "peak_mem_bytes",
                    "checkpoint_bytes"):
            assert r[key] is not None, key
        assert set(r["latency_ms"]) == {"1", "32"}
        assert r["latency_ms"]["32"] > 0
        assert 0 < r["mfu"] < 1
        # Measured FLOPs and 6ND agree to within the attention and head terms at these sizes.
        assert 0.5 < r["flops"] / r["flops_6nd"] < 2.0
        assert r["checkpoint_bytes"] == (study / r["checkpoint"]).stat().st_size
    losses = [r["val_loss"] for r in summary["rungs"]]
    # A ladder this short is noisy rung to rung; across a 20x span the loss must still fall.
    assert losses[-1] < losses[0] - 0.05
    (fit,) = summary["fits"]
    assert fit["law"] == "power" and fit["x"] == "n_nonembed"
    assert set(fit["params"]) == {"E", "A", "alpha"}
    assert fit["intervals"]["alpha"][0] <= fit["params"]["alpha"] <= fit["intervals"]["alpha"][1]
    ho = fit["holdout"]
    (pt,) = ho["points"]
    assert ho["rule"] == "largest:1" and pt["measured"] == pytest.approx(losses[-1])
    assert pt["rel_error"] == pytest.approx((pt["predicted"] - pt["measured"]) / pt["measured"])
    with open(study / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and float(rows[0]["val_loss"]) == pytest.approx(losses[0])


def test_report_escapes_user_text(study):
    html = (study / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html


def test_show_and_report_rebuild_from_the_database(study):
    (study / "report.html").unlink()
    (study / "summary.json").unlink()
    report, show = scalelab_each(["report", study], ["show", study])
    assert report.returncode == 0 and show.returncode == 0, report.stderr + show.stderr
    assert (study / "report.html").stat().st_size > 10_000
    assert json.loads((study / "summary.json").read_text())["rungs"]
    assert "val loss" in show.stdout and "holdout" in show.stdout


def test_rerun_of_a_finished_study_retrains_nothing(study):
    before = db_rows(study)
    weights = {p.name: (p.stat().st_mtime_ns, p.read_bytes())
               for p in (study / "checkpoints").glob("rung-*.safetensors")}
    assert len(weights) == 4
    proc = scalelab("run", study.parent / "tiny.yaml", "--out", study, check=True)
    after = db_rows(study)
    # Nothing about a rung was recorded again: not its row (val loss, train seconds, latency)
    # nor its training curve, and no rung was set back to running.
    assert after["rungs"] == before["rungs"] and after["curves"] == before["curves"]
    # No weights were saved again and no resume checkpoints were started.
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes())
            for p in (study / "checkpoints").glob("rung-*.safetensors")} == weights
    assert not [p for p in (study / "checkpoints").iterdir() if p.is_dir()]
    # The progress bars show every rung as the finished rung it is (all its steps, from the
    # record), not as "0/500 loss -"; the rows above show that none trained again.
    progress = {int(m[1]): (int(m[2]), int(m[3]))
                for m in re.finditer(r"^rung (\d+) \(.*?(\d+)/(\d+)", proc.stdout, re.M)}
    assert progress == {r[0]: (r[1], r[1]) for r in _rung_steps(study)}, proc.stdout


def _rung_steps(folder: Path) -> list[tuple[int, int]]:
    summary = json.loads((folder / "summary.json").read_text())
    return [(r["rung"], r["steps"]) for r in summary["rungs"]]


def _one_line_exit_2(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


BAD_SPECS = [
    ("name: x\ntrain: {tokens: [1, 2\n", "malformed YAML"),
    ("name: x\nladder: {sizez: [1]}\n", "unknown key 'ladder.sizez'"),
    ("ladder: {sizes: [1.0e4, -3]}\n", "sizes must be positive"),
    ("ladder: {sizes: [0]}\n", "sizes must be positive"),
    ("train: {tokens: 0}\n", "train.tokens"),
]
BAD_OPTIONS = [
    (["--preset", "tpu"], "unknown preset 'tpu' (choose from default, gpu)"),
    (["SPEC", "--preset", "gpu"], "give a SPEC file or --preset, not both"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda, got 'tpu'"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict:
    """Each bad command line below, run in a folder of its own (`scalelab_each`: one process
    each): {case: (process, its folder)}."""
    cases: dict = {}
    for text, _ in BAD_SPECS:
        folder = tmp_path_factory.mktemp("bad-spec")
        (folder / "bad.yaml").write_text(text)
        cases[text] = (["run", folder / "bad.yaml", "--out", folder / "s"], folder)
    for args, _ in BAD_OPTIONS:
        folder = tmp_path_factory.mktemp("bad-option")
        spec = write_spec(folder / "s.yaml", tiny_spec())
        argv = ["run", *[str(spec) if a == "SPEC" else a for a in args], "--out", folder / "never"]
        cases[tuple(args)] = (argv, folder)
    folder = tmp_path_factory.mktemp("unwritable")
    (folder / "file").write_text("not a folder")
    cases["unwritable"] = (["run", "--quick", "--out", folder / "file" / "s"], folder)
    folder = tmp_path_factory.mktemp("not-a-study")
    cases["not a study"] = (["show", folder], folder)
    procs = scalelab_each(*[argv for argv, _ in cases.values()])
    return {case: (proc, folder) for (case, (_, folder)), proc in zip(cases.items(), procs,
                                                                       strict=True)}


@pytest.mark.parametrize("text,needle", BAD_SPECS)
def test_bad_spec_is_one_line_and_exit_2(refused, text, needle):
    proc, folder = refused[text]
    _one_line_exit_2(proc, needle)
    assert not (folder / "s" / "study.db").exists()


def test_unwritable_out_is_one_line_and_exit_2(refused):
    _one_line_exit_2(refused["unwritable"][0], "cannot write")


def test_other_spec_on_an_existing_study_is_refused(study, tmp_path):
    before = db_rows(study)
    other = write_spec(tmp_path / "other.yaml", tiny_spec(train={"lr": 1e-3}))
    _one_line_exit_2(scalelab("run", other, "--out", study), "different spec")
    assert db_rows(study) == before


def test_missing_study_folder_is_one_line(refused):
    _one_line_exit_2(refused["not a study"][0], "not a study folder")


def _start_run(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scalelab", "run", str(spec), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env())


def _wait_for(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _rung_statuses(folder: Path) -> list[str]:
    """The rungs' status column, by name (its position differs between store schemas)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    statuses = [r[0] for r in conn.execute("SELECT status FROM rungs")]
    conn.close()
    return statuses


def _losses(folder: Path) -> list[float]:
    return [r["val_loss"] for r in json.loads((folder / "summary.json").read_text())["rungs"]]


@pytest.mark.slow
def test_kill_9_mid_rung_then_rerun_completes_with_identical_losses(study, tmp_path):
    """The module's study is the uninterrupted run of the same spec."""
    spec = write_spec(tmp_path / "tiny.yaml", tiny_spec(name="<script>alert(1)</script>"))
    out = tmp_path / "s"
    proc = _start_run(spec, out)
    # Kill while rung 2 is mid-way: it has a checkpoint, and rungs 0-1 are finished.
    _wait_for(lambda: any((out / "checkpoints" / "rung-2").glob("step-*")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    statuses = set(_rung_statuses(out))
    assert "running" in statuses and "done" in statuses

    second = _start_run(spec, out)
    # A second process on the locked study is refused while the first one works.
    _wait_for(lambda: (out / "study.lock").read_text().strip() == f"pid {second.pid}")
    blocked = scalelab("run", spec, "--out", out)
    _one_line_exit_2(blocked, "locked")
    assert second.wait(timeout=600) == 0, second.stderr.read()
    assert _losses(out) == _losses(study)


@pytest.mark.parametrize("args,needle", BAD_OPTIONS)
def test_bad_preset_or_device_is_one_line_and_nothing_written(refused, args, needle):
    proc, folder = refused[tuple(args)]
    _one_line_exit_2(proc, needle)
    assert not (folder / "never").exists()
