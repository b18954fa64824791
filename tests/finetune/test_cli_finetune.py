"""`scalelab finetune` through the real entry point on a tiny trained study: the records, the
summary and report, a rerun that keeps everything, recommend, the merged export, bad input."""

from __future__ import annotations

import sqlite3

import pytest
import torch
from safetensors.torch import load_model

from tests.finetune.conftest import FT_METHODS, FT_TOKENS, db_state
from tests.helpers import copy_study

METHODS = ("full", "lora-r4", "lora-r16", "ia3")


def test_every_rung_gets_every_method_with_its_measurements(summary, finetunes):
    rungs = [r for r in summary["rungs"] if r["status"] == "done"]
    assert len(rungs) == 2
    assert sorted(finetunes) == sorted(f"r{r['rung']}-stdlib-test-{m}" for r in rungs
                                       for m in METHODS)
    for f in finetunes.values():
        rung = next(r for r in rungs if r["rung"] == f["of_rung"])
        assert f["status"] == "done" and f["task"] == "stdlib-test"
        assert f["n_params"] == rung["n_params"] and f["n_nonembed"] == rung["n_nonembed"]
        assert f["D"] == 8192 and f["unit"] == "byte" and f["steps"] == 32
        assert f["trainable_fraction"] == pytest.approx(f["trainable_params"] / f["n_params"])
        assert f["zero_shot_loss"] > f["val_loss"] > 0  # it learned something
        assert f["train_seconds"] > 0 and f["units_per_s"] > 0 and f["peak_mem_bytes"] > 0
        assert f["bytes"] > 0 and f["full_bytes"] >= rung["checkpoint_bytes"] * 0.99
        assert set(f["latency_ms"]) == {"1", "32"} and "window_losses" not in f
        assert f["metrics"]["bpb"] > 0 and len(f["curve"]) >= 2
        assert f["settings"]["identity"]["task"]["path"] == "{stdlib}/test"
    for r in rungs:
        full = finetunes[f"r{r['rung']}-stdlib-test-full"]
        r4 = finetunes[f"r{r['rung']}-stdlib-test-lora-r4"]
        r16 = finetunes[f"r{r['rung']}-stdlib-test-lora-r16"]
        ia3 = finetunes[f"r{r['rung']}-stdlib-test-ia3"]
        assert full["trainable_fraction"] == 1.0 and full["bytes"] == full["full_bytes"]
        assert ia3["trainable_params"] < r4["trainable_params"] < r16["trainable_params"]
        assert r16["trainable_params"] == 4 * r4["trainable_params"]
        assert r4["bytes"] < full["bytes"] / 3  # the adapter file, not the model
        assert r4["train_state_bytes"] < full["train_state_bytes"]
        assert full["lr"] == pytest.approx(r["lr"]) and r4["lr"] == pytest.approx(3 * r["lr"])
        # the matched budget: same data, same zero-shot starting point
        assert len({f["zero_shot_loss"] for f in (full, r4, r16, ia3)}) == 1
        assert r4["extra"]["merge_max_abs_diff"] <= 1e-5


def test_scaling_record_and_report(study, summary):
    (a,) = summary["finetune_scaling"]
    assert a["task"] == "stdlib-test" and set(a["laws"]) == {*METHODS, "zero-shot"}
    assert {g["method"] for g in a["gaps"]} == {"lora-r4", "lora-r16", "ia3"}
    for g in a["gaps"]:
        assert len(g["points"]) == 2 and g["trend"]["verdict"] in ("closes", "widens", "unclear")
        for p in g["points"]:
            assert p["lo"] <= p["gap"] <= p["hi"]
            assert p["gap"] == pytest.approx(p["loss"] - p["full_loss"], abs=1e-6)
    html = (study / "report.html").read_text()
    assert "Fine-tuning" in html and "Second task: stdlib-test" in html
    start = html.index("Second task: stdlib-test")
    assert html.count("<svg", start) >= 3 and "r1-stdlib-test-lora-r16" in html[start:]
    stdout = (study.parent / "finetune-stdout.txt").read_text()
    assert "lora-r4 - full (nats)" in stdout and "trend:" in stdout


def test_rerun_keeps_every_finetune_and_changes_nothing(study, tmp_path, cli):
    folder = copy_study(study, tmp_path / "again")
    before = _rows(folder, "SELECT name, val_loss, updated FROM finetunes ORDER BY name")
    proc = cli("finetune", folder, "--tokens", FT_TOKENS, "--methods", FT_METHODS,
                    check=True)
    assert proc.stdout.count("already in the study, kept") == 8
    assert _rows(folder, "SELECT name, val_loss, updated FROM finetunes ORDER BY name") == before


def test_other_settings_need_redo(study, tmp_path, cli):
    folder = copy_study(study, tmp_path / "redo")
    state = db_state(folder)
    proc = cli("finetune", folder, "--tokens", "4096", "--methods", "lora:r=4",
                    "--rungs", "0")
    _one_line_exit_2(proc, "r0-stdlib-test-lora-r4 is already in the study with other settings")
    assert db_state(folder) == state
    proc = cli("finetune", folder, "--tokens", "4096", "--methods", "lora:r=4",
                    "--rungs", "0", "--redo", check=True)
    (d,) = _rows(folder, "SELECT D FROM finetunes WHERE name = 'r0-stdlib-test-lora-r4'")
    assert d == (4096,)


def test_recommend_on_the_second_task(study, cli):
    import json

    proc = cli("recommend", study, "--task", "stdlib-test", "--json", check=True)
    result = json.loads(proc.stdout)
    names = {"r0", "r1"} | {f"r{r}-stdlib-test-{m}" for r in (0, 1) for m in METHODS}
    assert result["task"] == "stdlib-test" and result["considered"] == len(names)
    assert result["choice"]["name"] in names and result["choice"]["task"] == "stdlib-test"
    own = cli("recommend", study, check=True)
    assert "--task stdlib-test" in own.stdout and "stdlib-test-" not in own.stdout.split(
        "\n")[0]
    bad = cli("recommend", study, "--task", "nope")
    _one_line_exit_2(bad, "no fine-tuned models on task 'nope'")


def test_merged_export_matches_the_adapter_model(study, tmp_path, cli):
    from scalelab.compress.load import load_rung_model
    from scalelab.finetune.load import find, load_finetune
    from scalelab.models.gpt import GPTFamily
    from scalelab.storage import StudyStore

    out = tmp_path / "merged.safetensors"
    proc = cli("export", study, "--finetune", "r1-stdlib-test-lora-r16", "--merge",
                    "--weights", out, check=True)
    assert "merged vs adapter model" in proc.stdout and "(ok, limit 1e-05)" in proc.stdout
    assert "in float32" in proc.stdout
    with StudyStore.open_readonly(study) as store:
        ft = find(store.finetunes(), "r1-stdlib-test-lora-r16")
        rungs = store.rungs()
    family = GPTFamily()
    trained, _ = load_finetune(study, ft, rungs, family)
    row = next(r for r in rungs if r["rung"] == 1)
    plain = load_rung_model(study, row, family)  # the rung's architecture, merged weights
    load_model(plain, str(out))
    x = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # the merged file in double precision against the adapter's exact function ...
        assert (plain.double()(x) - trained.double()(x)).abs().max().item() <= 1e-5
        # ... and the two shipped fp32 models, forward-pass rounding included
        assert (plain.float()(x) - trained.float()(x)).abs().max().item() <= 1e-4
    ia3 = cli("export", study, "--finetune", "r0-stdlib-test-ia3", "--merge", "--weights",
                   tmp_path / "ia3.safetensors", check=True)
    assert "(ok, limit 1e-05)" in ia3.stdout
    full = cli("export", study, "--finetune", "r0-stdlib-test-full", "--weights",
                    tmp_path / "full.safetensors", check=True)
    assert "wrote" in full.stdout


def test_export_of_an_adapter_needs_merge(study, tmp_path, cli):
    proc = cli("export", study, "--finetune", "r0-stdlib-test-lora-r4", "--weights",
                    tmp_path / "x.safetensors")
    _one_line_exit_2(proc, "with --merge")
    _one_line_exit_2(cli("export", study, "--finetune", "nope", "--merge", "--weights",
                              tmp_path / "x.safetensors"), "does not exist")


def _rows(folder, sql):
    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _one_line_exit_2(proc, needle):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def unfinished(base_study, tmp_path):
    """A copy of the base study whose rung 1 is still running (as after a kill)."""
    folder = copy_study(base_study, tmp_path / "unfinished")
    conn = sqlite3.connect(folder / "study.db")
    with conn:
        conn.execute("UPDATE rungs SET status = 'running' WHERE rung = 1")
    conn.close()
    return folder


@pytest.mark.parametrize("args, needle", [
    (["--rungs", "1"], "rung 1 has not finished (status running)"),
    ([], "rungs 1 (running) have not finished"),
    (["--rungs", "0", "--methods", "lora:r=64"],
     "rank 64 is larger than layer blocks.0.attn.qkv of rung 0 (32 -> 96)"),
    (["--rungs", "0", "--methods", "full,lora:r=4:targets=q_proj"],
     "target module 'q_proj' matches no Linear layer of rung 0"),
    (["--rungs", "0", "--on", "{name: text, path: '{stdlib}/json', tokenizer: bpe, "
                              "vocab_size: 300}"],
     "vocabulary (300 tokens) does not match the study's model (256 tokens)"),
    (["--rungs", "0", "--on", "digits"], "family 'gpt' does not fit task 'digits'"),
    (["--rungs", "7"], "rung 7 does not exist"),
    (["--rungs", "0", "--methods", "lora"], "LoRA needs a rank"),
    (["--rungs", "0", "--tokens", "0"], "--tokens must be positive"),
    (["--rungs", "0", "--on", "/no/such/folder"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(unfinished, args, needle, cli):
    state = db_state(unfinished)
    _one_line_exit_2(cli("finetune", unfinished, *args), needle)
    assert db_state(unfinished) == state
