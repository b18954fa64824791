"""A spec file's relative paths (a CSV, a text folder, a factory's module) resolve from the
spec's own folder, whatever the working directory; a missing one names the path as written and
where it was looked for. Specs given as Python objects resolve from the working directory."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from scalelab.errors import UserError
from scalelab.spec import load_spec, parse_spec
from scalelab.storage import StudyStore
from scalelab.study import canonical_spec, open_study, resolve
from tests.helpers import scalelab, write_spec

FACTORY = """
import torch.nn as nn

def make(k):
    return nn.Sequential(nn.Linear(4, k), nn.ReLU(), nn.Linear(k, 2))
"""


def write_project(root: Path) -> Path:
    """A user's project: specs/study.yaml beside specs/data/rows.csv and specs/beside_spec.py."""
    specs = root / "specs"
    (specs / "data").mkdir(parents=True)
    rows = "".join(f"{i % 5},{i % 7},{i % 3},{(i * 7) % 11},{i % 2}\n" for i in range(60))
    (specs / "data" / "rows.csv").write_text("a,b,c,d,y\n" + rows)
    (specs / "beside_spec.py").write_text(textwrap.dedent(FACTORY))
    return write_spec(specs / "study.yaml", {
        "task": {"name": "tabular", "path": "data/rows.csv", "target": "y"},
        "family": {"name": "custom", "factory": "beside_spec:make", "knob_max": 64},
        "ladder": {"sizes": [60.0, 200.0]},
        "train": {"tokens": 128, "batch_size": 16, "lr": 1e-3, "eval_every": 4,
                  "checkpoint_every": 8, "eval_tokens": 16, "final_eval_tokens": 32},
        "measure": {"latency_repeats": 3, "latency_batches": [1]},
        "fit": {"bootstrap": 10}, "device": "cpu"})


def test_relative_paths_resolve_from_the_spec_folder(tmp_path, monkeypatch):
    spec_file = write_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(spec_file)
    assert spec.task.options["path"] == str(tmp_path / "specs" / "data" / "rows.csv")
    assert spec.family.options["module_dir"] == str(tmp_path / "specs")
    res = resolve(spec)  # the CSV is read and the factory imported from the spec's folder
    assert res.task.io.input_shape == (4,)
    assert res.family.count_knob(8) == 4 * 8 + 8 + 8 * 2 + 2


def test_a_missing_path_names_the_path_as_written_and_where_it_looked(tmp_path, monkeypatch):
    spec_file = write_project(tmp_path)
    data = yaml.safe_load(spec_file.read_text())
    data["task"]["path"] = "data/nope.csv"
    write_spec(spec_file, data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        load_spec(spec_file)
    looked = tmp_path / "specs" / "data" / "nope.csv"
    assert str(err.value) == (f"{spec_file}: task.path 'data/nope.csv' not found: looked for "
                              f"{looked} (a spec's relative paths are resolved from its own "
                              "folder)")
    # Written from the working directory, as scalelab read it before: the message says so.
    data["task"]["path"] = "specs/data/rows.csv"
    write_spec(spec_file, data)
    with pytest.raises(UserError, match="specs/data/rows.csv is found from the working "
                                        "directory: write the path from the spec's folder"):
        load_spec(spec_file)


def test_a_missing_factory_module_names_where_it_looked(tmp_path, monkeypatch):
    spec_file = write_project(tmp_path)
    data = yaml.safe_load(spec_file.read_text())
    data["family"]["factory"] = "not_beside_spec_xyz:make"
    write_spec(spec_file, data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"looked for {tmp_path / 'specs'}/not_beside_spec_xyz.py"):
        resolve(load_spec(spec_file))


def test_specs_given_as_python_objects_resolve_from_the_working_directory(tmp_path, monkeypatch):
    spec_file = write_project(tmp_path)
    monkeypatch.chdir(spec_file.parent)
    data = yaml.safe_load(spec_file.read_text())
    spec = parse_spec(data)
    assert spec.task.options["path"] == "data/rows.csv"
    assert resolve(spec).task.io.input_shape == (4,)


def test_a_study_stored_with_relative_paths_still_resumes(tmp_path, monkeypatch):
    """A study made by b309b61 stored its paths as written, relative to where it ran; run
    again from there with the same spec file, it resumes."""
    spec_file = write_project(tmp_path)
    monkeypatch.chdir(spec_file.parent)
    data = yaml.safe_load(spec_file.read_text())
    old = canonical_spec(parse_spec(data))  # as b309b61 stored it: relative, no module_dir
    old["family"].pop("module_dir")
    out = tmp_path / "study"
    with StudyStore.create_or_open(out) as store:
        store.init_study("old", "tabular", "custom", old)
    new = load_spec(spec_file)
    open_study(new, out, canonical_spec(new)).close()  # no "different spec"
    # Another spec, another CSV: still refused.
    other = tmp_path / "specs" / "data" / "other.csv"
    shutil.copy(tmp_path / "specs" / "data" / "rows.csv", other)
    data["task"]["path"] = "data/other.csv"
    changed = load_spec(write_spec(tmp_path / "specs" / "other.yaml", data))
    with pytest.raises(UserError, match="holds a study with a different spec"):
        open_study(changed, out, canonical_spec(changed))


def test_a_spec_runs_from_any_working_directory_and_stores_absolute_paths(tmp_path):
    spec_file = write_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "study"
    proc = scalelab("run", os.path.relpath(spec_file, elsewhere), "--out", out, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    with StudyStore.open_readonly(out) as store:
        stored = store.study()["spec"]
        assert [r["status"] for r in store.rungs()] == ["done", "done"]
    assert stored["task"]["path"] == str(tmp_path / "specs" / "data" / "rows.csv")
    assert stored["family"]["module_dir"] == str(tmp_path / "specs")
    # The stored spec (absolute paths) resumes from another directory again: nothing to train.
    proc = scalelab("run", spec_file, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
