"""Small frictions of the CLI, through the real entry point: Ctrl-C during `run`, the bars of
a resumed run, why a study has no law, `export`'s default rung and an unwritable export path."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli_env, scalelab, scalelab_each, tiny_spec, write_spec

# Two sizes of 10 steps each (2,560 tokens, 256 a step): a complete study, too short a ladder
# for a law.
TWO = {"ladder": {"sizes": [3.0e3, 1.2e4]}, "train": {"tokens": 2_560}}


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished 2-rung study and the output of the `run` that made it."""
    root = tmp_path_factory.mktemp("two-sizes")
    spec = write_spec(root / "two.yaml", tiny_spec(name="two", **TWO))
    proc = scalelab("run", spec, "--out", root / "s", check=True)
    return root / "s", proc


def _rungs(folder: Path) -> list[dict]:
    return json.loads((folder / "summary.json").read_text())["rungs"]


def _one_line_exit_2(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture(scope="module")
def commands(two_sizes, tmp_path_factory) -> dict[str, tuple]:
    """`show`, `export` without --rung, and `export` to an unwritable file and to a folder, on
    the finished study (`scalelab_each`: one process each; none of them changes the study):
    {name: (process, the path it was given)}."""
    folder, _ = two_sizes
    tmp = tmp_path_factory.mktemp("commands")
    given = {"show": None, "export": tmp / "model.onnx",
             "unwritable": _unwritable_folder(tmp) / "model.onnx", "folder given": tmp}
    procs = scalelab_each(["show", folder], ["export", folder, "--onnx", given["export"]],
                          ["export", folder, "--rung", "1", "--onnx", given["unwritable"]],
                          ["export", folder, "--onnx", given["folder given"]])
    return {name: (proc, path) for (name, path), proc in zip(given.items(), procs, strict=True)}


NO_LAW_2 = ("No law fitted: 2 of 2 rungs finished with a validation loss; a law "
            "L(N) = E + A·N^-alpha needs 3 or more")


def test_two_sizes_say_why_there_is_no_law_in_run_and_show(two_sizes, commands):
    folder, run = two_sizes
    assert NO_LAW_2 in run.stdout.splitlines()
    show, _ = commands["show"]
    assert show.returncode == 0, show.stderr
    assert show.stdout.strip().splitlines()[-1] == NO_LAW_2
    # the report says the same, in its headline and under its loss plot
    html = (folder / "report.html").read_text()
    assert html.count(NO_LAW_2) == 2 and "No law fitted yet" not in html


def test_diverged_unfinished_and_two_axis_studies_say_why():
    from scalelab.laws.missing import missing_law

    done = {"status": "done", "n_nonembed": 1e4, "D": 1e6, "val_loss": 2.0}
    rungs = [done, dict(done, status="diverged", val_loss=None), dict(done, status="pending")]
    assert missing_law({"fits": [], "rungs": rungs}) == (
        "No law fitted yet: 2 of 3 rungs finished; the law is fitted when every rung has "
        "(run the same `scalelab run` command to resume)")
    assert missing_law({"fits": [], "rungs": rungs[:2]}) == (
        "No law fitted: 1 of 2 rungs finished with a validation loss (1 diverged); a law "
        "L(N) = E + A·N^-alpha needs 3 or more")
    # A grid of 2 sizes x 2 D: the two-axis fit's own reason.
    grid = [dict(done, rung=i, n_nonembed=n, D=d, val_loss=2.0 + 1e3 / n + 1e5 / d)
            for i, (n, d) in enumerate([(1e4, 1e6), (1e4, 3e6), (4e4, 1e6), (4e4, 3e6)])]
    spec = {"ladder": {"sizes": [1e4, 4e4], "tokens": [1e6, 3e6]}}
    assert missing_law({"fits": [], "rungs": grid, "study": {"spec": spec}}) == (
        "No law fitted: 4 distinct (N, D) points: L(N, D) = E + A·N^-alpha + B·D^-beta has 5 "
        "parameters and needs at least 6")
    assert missing_law({"fits": [{"law": "power"}], "rungs": rungs}) is None


def test_rerun_shows_finished_rungs_as_done_with_their_loss(two_sizes):
    folder, _ = two_sizes
    proc = scalelab("run", folder.parent / "two.yaml", "--out", folder, check=True)
    for r in _rungs(folder):
        bar = re.search(rf"^rung {r['rung']} \(.*$", proc.stdout, re.MULTILINE)
        assert bar, proc.stdout
        assert f"10/10 loss {r['val_loss']:.3f} (val)" in bar.group(0), bar.group(0)


def test_export_without_rung_exports_the_largest_finished_rung(two_sizes, commands):
    folder, _ = two_sizes
    proc, out = commands["export"]
    assert proc.returncode == 0, proc.stderr
    largest = max(_rungs(folder), key=lambda r: r["n_nonembed"])["rung"]
    assert f"wrote {out} (rung {largest}, " in proc.stdout.replace("\n", " ")
    assert out.stat().st_size > 0


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this user cannot create files in: a read-only one, or for root (whom file
    modes do not stop) sysfs, which refuses new files to everyone."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    return folder


def test_unwritable_export_path_is_one_line_naming_it(commands):
    unwritable, target = commands["unwritable"]
    _one_line_exit_2(unwritable, f"cannot write {target}: ")
    folder_given, folder = commands["folder given"]
    _one_line_exit_2(folder_given, f"{folder} is a folder: give a file name")


def test_the_writable_check_leaves_nothing_behind(tmp_path):
    from scalelab.export import check_writable

    new, old = tmp_path / "new.onnx", tmp_path / "old.onnx"
    old.write_bytes(b"kept")
    check_writable(new)
    check_writable(old)
    assert not new.exists() and old.read_bytes() == b"kept"


def test_interrupt_line_after_the_last_rung_and_before_the_first(two_sizes, tmp_path):
    from scalelab.cli.study import ResumeNote

    folder, _ = two_sizes
    assert ResumeNote().line(folder) == ("interrupted: 2 of 2 rungs finished and kept; run the "
                                         "same command to fit the law and write the report")
    assert ResumeNote().line(tmp_path) == ("interrupted before anything was recorded; run the "
                                           "same command to start")


def _newest_step(folder: Path) -> int:
    return int(sorted(folder.glob("step-*"))[-1].name.removeprefix("step-"))


def _sigint_as_from_a_terminal() -> None:
    """In the child, before it starts: SIGINT at its default and unblocked, as a shell gives a
    foreground command. A child inherits both from this process, and in the whole suite an
    earlier test left pytest's process with SIGINT ignored or blocked (the run then ignored the
    signal and exited 0), which a user's Ctrl-C never meets."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


@pytest.mark.slow
def test_ctrl_c_says_what_was_kept_and_the_rerun_resumes(tmp_path):
    # 500 steps a rung, a resume point every 20: interrupted at rung 1's first resume point,
    # it is far from finishing (with 100 steps an idle machine finished the rung before the
    # signal arrived).
    spec = write_spec(tmp_path / "s.yaml", tiny_spec(
        name="ctrl-c", ladder={"sizes": [3.0e3, 1.2e4]},
        train={"tokens": 128_000, "checkpoint_every": 20, "eval_every": 20}))
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", "run", str(spec), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), preexec_fn=_sigint_as_from_a_terminal)
    resume_dir = out / "checkpoints" / "rung-1"
    deadline = time.monotonic() + 300
    while not any(resume_dir.glob("step-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    step = _newest_step(resume_dir)  # what the rerun resumes from
    lines = stderr.strip().splitlines()
    assert lines and lines[-1] == (
        f"interrupted: 1 of 2 rungs finished and kept; rung 1 resumes from step {step}; "
        "run the same command to resume")
    show = scalelab("show", out, check=True)
    assert show.stdout.strip().splitlines()[-1].startswith("No law fitted yet: 1 of 2 rungs")

    rerun = scalelab("run", spec, "--out", out, check=True)
    assert f"resuming from step {step}" in rerun.stdout
    assert [r["status"] for r in _rungs(out)] == ["done", "done"]
