"""The custom family is told what the task gives (`io`), and a model that does not fit the task
is one line before the study folder is written, not a shape error mid-training."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
import torch

from scalelab.ladder import plan_ladder
from scalelab.spec import parse_spec
from scalelab.study import resolve, run_study
from scalelab.tasks.base import TaskIO
from tests.helpers import scalelab, write_spec

FACTORIES = '''
import math

import torch.nn as nn

SEEN = []


def reads_io(k, io):
    """The task's inputs and outputs, from io: no guessing."""
    SEEN.append(io)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(io.input_shape), k), nn.ReLU(),
                         nn.Linear(k, io.n_outputs))


def old_style(k):
    return nn.Sequential(nn.Linear(8, k), nn.ReLU(), nn.Linear(k, 3))


def seven_inputs(k):
    return nn.Sequential(nn.Linear(7, k), nn.ReLU(), nn.Linear(k, 3))


def five_outputs(k):
    return nn.Sequential(nn.Linear(8, k), nn.ReLU(), nn.Linear(k, 5))
'''


def write_csv(path: Path) -> Path:
    """8 numeric features, 3 classes, 90 rows."""
    rows = [",".join(str((i * (j + 3)) % 11) for j in range(8)) + f",{i % 3}" for i in range(90)]
    path.write_text(",".join(f"f{j}" for j in range(8)) + ",y\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A spec folder with the CSV and the factories' module beside it (as a user keeps them)."""
    (tmp_path / "factories_io.py").write_text(textwrap.dedent(FACTORIES))
    write_csv(tmp_path / "rows.csv")
    return tmp_path


def spec_of(folder: Path, factory: str) -> dict:
    return {"task": {"name": "tabular", "path": str(folder / "rows.csv"), "target": "y"},
            "family": {"name": "custom", "factory": f"factories_io:{factory}", "knob_max": 64},
            "ladder": {"sizes": [100.0, 300.0]},
            "train": {"tokens": 256, "batch_size": 32, "lr": 1e-3, "eval_every": 4,
                      "checkpoint_every": 8, "eval_tokens": 32, "final_eval_tokens": 64},
            "measure": {"latency_repeats": 3, "latency_batches": [1]},
            "fit": {"bootstrap": 10}, "device": "cpu"}


def test_a_factory_with_io_is_told_the_tasks_inputs_and_outputs(folder, monkeypatch):
    monkeypatch.syspath_prepend(str(folder))
    spec = parse_spec(spec_of(folder, "reads_io"))
    res = resolve(spec)
    plans = plan_ladder(spec, res.task, res.family)
    module = __import__("factories_io")
    assert {(io.kind, io.input_shape, io.n_outputs) for io in module.SEEN} == {("vector", (8,), 3)}
    # The shape holds the io, so a stored rung rebuilds from its shape alone.
    assert plans[0].shape["io"] == {"kind": "vector", "input_shape": [8], "n_outputs": 3,
                                    "vocab_size": None}
    model = res.family.build(plans[-1].shape)
    assert model(res.task.example_input(4)).shape == (4, 3)
    summary = run_study(spec, folder / "study")
    assert [r["status"] for r in summary["rungs"]] == ["done", "done"]


def test_a_factory_without_io_keeps_its_shape(folder, monkeypatch):
    monkeypatch.syspath_prepend(str(folder))
    spec = parse_spec(spec_of(folder, "old_style"))
    res = resolve(spec)
    plans = plan_ladder(spec, res.task, res.family)
    assert [sorted(p.shape) for p in plans] == [["factory", "knob"]] * 2


@pytest.mark.parametrize("factory, needle", [
    ("seven_inputs", "does not fit the task's inputs (a batch of shape (2, 8)): RuntimeError: "
                     "mat1 and mat2 shapes cannot be multiplied (2x8 and 7x"),
    ("five_outputs", "returns outputs of shape (2, 5) for a batch of shape (2, 8); the task "
                     "needs (2, 3)"),
])
def test_a_model_that_does_not_fit_the_task_is_one_line_before_anything_is_written(
        folder, factory, needle):
    spec = write_spec(folder / "spec.yaml", spec_of(folder, factory))
    out = folder / "study"
    proc = scalelab("run", spec, "--out", out, cwd=folder)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: custom family: factory "
                                                   f"'factories_io:{factory}' at knob "), lines
    assert needle in lines[0], lines[0]
    assert "vectors of 8 features -> 3 outputs" in lines[0]
    assert not out.exists()


def test_the_example_factory_reads_io():
    """examples/my_model.py, the factory the README shows: its first and last layers follow io."""
    path = Path(__file__).resolve().parents[2] / "examples" / "my_model.py"
    loader = importlib.util.spec_from_file_location("example_my_model", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    model = module.make(16, io=TaskIO("image", (1, 8, 8), 10))
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    model = module.make(16, io=TaskIO("vector", (5,), 2))
    assert model(torch.zeros(3, 5)).shape == (3, 2)
