"""Parsing of methods, `--on` and `--rungs`, and the second task's fit check (no training)."""

from __future__ import annotations

import pytest

from scalelab.errors import UserError
from scalelab.finetune import second_task
from scalelab.finetune.methods import DEFAULT_METHODS, parse_method, parse_methods
from scalelab.finetune.plan import parse_rungs


def test_defaults_are_full_and_two_lora_ranks_with_documented_settings():
    ms = parse_methods(None)
    assert [m.text for m in ms] == list(DEFAULT_METHODS) == ["full", "lora:r=4", "lora:r=16"]
    full, r4, r16 = ms
    assert (full.kind, full.lr.value, full.lr.relative) == ("full", 1.0, True)
    assert (r4.rank, r4.alpha, r4.dropout, r4.targets) == (4, 16.0, 0.0, None)
    assert (r16.rank, r16.lr.value, r16.lr.relative) == (16, 3.0, True)
    assert [m.slug for m in ms] == ["full", "lora-r4", "lora-r16"]


def test_settings_and_slugs():
    m = parse_method("lora:r=8:alpha=32:dropout=0.05:targets=attn:lr=3e-4")
    assert (m.rank, m.alpha, m.dropout, m.targets) == (8, 32.0, 0.05, ("attn",))
    assert (m.lr.value, m.lr.relative, m.lr.resolve(1e-3)) == (3e-4, False, 3e-4)
    assert m.slug == "lora-r8-a32-d0.05-attn-lr0.0003"
    assert parse_method("full:lr=0.3x").lr.resolve(2e-3) == pytest.approx(6e-4)
    assert parse_method("ia3").slug == "ia3" and parse_method("ia3").lr.value == 10.0
    assert parse_method("lora:r=4:targets=qkv+mlp.fc").targets == ("qkv", "mlp.fc")


@pytest.mark.parametrize("text, needle", [
    ("adapter", "unknown fine-tuning method"),
    ("lora", "needs a rank"),
    ("lora:r=0", "at least 1"),
    ("lora:r=2.5", "whole number"),
    ("lora:r=4:rank=3", "has no setting 'rank'"),
    ("lora:r=4:r=8", "given twice"),
    ("lora:r=4:alpha=-1", "alpha must be positive"),
    ("lora:r=4:dropout=1", "dropout must be in"),
    ("full:lr=-1", "lr must be positive"),
    ("full:lr=fast", "lr must be a number"),
    ("full:r=4", "has no setting 'r'"),
    ("lora:r=4:targets=all+qkv", "stand alone"),
    ("lora:r=4:targets=q;k", "target module names"),
    ("lora:r=4:alpha", "key=value"),
])
def test_bad_methods_are_one_line_errors(text, needle):
    with pytest.raises(UserError, match=needle) as err:
        parse_methods(text)
    assert "\n" not in str(err.value)


def test_duplicate_and_empty_method_lists_are_refused():
    with pytest.raises(UserError, match="twice"):
        parse_methods("full,lora:r=4,lora:r=4")
    with pytest.raises(UserError, match="separated by commas"):
        parse_methods("full,,lora:r=4")


def test_rungs():
    assert parse_rungs(None) is None and parse_rungs("all") is None
    assert parse_rungs("0, 2,3") == [0, 2, 3]
    with pytest.raises(UserError, match="rung indices"):
        parse_rungs("largest")
    with pytest.raises(UserError, match="twice"):
        parse_rungs("1,1")


def test_on_forms(tmp_path):
    default = second_task.parse_on(None)
    assert default.slug == "stdlib-test" and default.spec == second_task.STDLIB_TEST
    assert second_task.parse_on("digits").spec == {"name": "digits"}
    inline = second_task.parse_on("{name: text, path: notes/, extensions: [.md]}")
    assert inline.spec["extensions"] == [".md"] and inline.slug == "text-notes"
    f = tmp_path / "task.yaml"
    f.write_text("task: {name: text, path: docs/*.txt}\n")
    assert second_task.parse_on(str(f)).slug == "text-docs"
    assert second_task.parse_on("some/folder").spec == {"name": "text", "path": "some/folder"}
    with pytest.raises(UserError, match="needs a 'name'"):
        second_task.parse_on("{path: x}")
    with pytest.raises(UserError, match="malformed"):
        second_task.parse_on("{name: [")


def test_missing_stdlib_test_folder_is_one_line_naming_on(monkeypatch, tmp_path):
    monkeypatch.setattr(second_task, "stdlib_test_dir", lambda: tmp_path / "no-test")
    with pytest.raises(UserError) as err:
        second_task.parse_on(None)
    text = str(err.value)
    assert "no standard-library test/ folder" in text and "--on" in text and "\n" not in text
