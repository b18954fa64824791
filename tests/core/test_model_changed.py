"""A study notices when what it trains is not what it planned, and a rung that raises ends
`failed` with its reason.

The factory lives in a module of its own (rewritten between runs, as a user edits it), named in
the spec by "module:make", so the spec text stays the same while the model changes."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from scalelab.errors import UserError
from scalelab.ladder import plan_ladder
from scalelab.spec import load_spec, parse_spec
from scalelab.storage import StudyStore
from scalelab.study import StudyIncomplete, build_summary, resolve, run_study

V1_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "v1_study"

# digits as vectors of 64 features -> 10 classes; the model of each version is `make(k)`.
SMALL = """
import torch.nn as nn

def make(k):
    return nn.Sequential(nn.Linear(64, k), nn.ReLU(), nn.Linear(k, 10))
"""
# Deeper: more parameters at every knob (the "fixed and made deeper").
DEEP = """
import torch.nn as nn

def make(k):
    return nn.Sequential(nn.Linear(64, k), nn.ReLU(), nn.Linear(k, k), nn.ReLU(),
                         nn.Linear(k, 10))
"""
# The same parameter counts as SMALL, another model (GELU has no parameters).
GELU = """
import torch.nn as nn

def make(k):
    return nn.Sequential(nn.Linear(64, k), nn.GELU(), nn.Linear(k, 10))
"""
# Builds and runs one forward pass, then raises a few steps into training.
FLAKY = """
import torch
import torch.nn as nn

class Flaky(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, k), nn.ReLU(), nn.Linear(k, 10))
        self.calls = 0

    def forward(self, x):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("boom at a training step")
        return self.net(x)

def make(k):
    return Flaky(k)
"""


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A function that (re)writes the factory module and returns its "module:make" name."""
    name = f"slchanged_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def write(source: str) -> str:
        (folder / f"{name}.py").write_text(source)
        sys.modules.pop(name, None)  # as a new process would, import the file as it is now
        importlib.invalidate_caches()
        return f"{name}:make"

    yield write
    sys.modules.pop(name, None)


def spec_of(factory_name: str) -> dict:
    return {"task": {"name": "digits", "flatten": True},
            "family": {"name": "custom", "factory": factory_name, "knob_max": 256},
            "ladder": {"sizes": [300.0, 1000.0]},
            "train": {"tokens": 320, "batch_size": 32, "lr": 1e-3, "eval_every": 5,
                      "checkpoint_every": 5, "eval_tokens": 64, "final_eval_tokens": 128},
            "measure": {"latency_repeats": 3, "latency_batches": [1]},
            "fit": {"bootstrap": 10}, "device": "cpu"}


def deep_count(k: int) -> int:
    """Parameters of DEEP's model at knob k."""
    return 64 * k + k + k * k + k + 10 * k + 10


def recorded(out: Path) -> tuple[dict, list[dict], dict]:
    """What the study holds: its record, its rungs and their curves."""
    with StudyStore.open_readonly(out) as store:
        return store.study(), store.rungs(), store.curves()


def test_a_rung_that_raises_ends_failed_with_its_reason(tmp_path, factory):
    out = tmp_path / "study"
    with pytest.raises(StudyIncomplete, match="boom at a training step"):
        run_study(parse_spec(spec_of(factory(FLAKY))), out)
    _, rungs, _ = recorded(out)
    assert [r["status"] for r in rungs] == ["failed", "failed"]
    assert all(r["failed_reason"] == "RuntimeError: boom at a training step" for r in rungs)
    with StudyStore.open_readonly(out) as store:  # what `show` reads
        shown = build_summary(store)
    written = json.loads((out / "summary.json").read_text())
    for summary in (shown, written):
        assert [(r["status"], r["failed_reason"]) for r in summary["rungs"]] == \
            [("failed", "RuntimeError: boom at a training step")] * 2


def test_a_changed_factory_is_refused_and_replan_plans_the_unfinished_rungs(tmp_path, factory):
    out = tmp_path / "study"
    with pytest.raises(StudyIncomplete):
        run_study(parse_spec(spec_of(factory(FLAKY))), out)
    before = recorded(out)
    spec = parse_spec(spec_of(factory(DEEP)))
    with pytest.raises(UserError) as err:
        run_study(spec, out)
    message = str(err.value)
    knob = before[1][0]["shape"]["knob"]
    assert message.startswith("rung 0: custom family: factory ")
    assert message.endswith(f"at knob {knob} now builds {deep_count(knob):,} parameters; this "
                            f"study planned {before[1][0]['n_params']:,}: the model changed "
                            "(1 more rung too); use a new --out or --replan")
    assert "\n" not in message
    assert recorded(out) == before  # nothing recorded changed

    from scalelab.models.base import built_counts

    summary = run_study(spec, out, replan=True)
    res = resolve(spec)
    rungs = summary["rungs"]
    assert [r["status"] for r in rungs] == ["done", "done"]
    for r in rungs:  # recorded N is what the factory builds now, at the knob it was built with
        assert (r["n_params"], r["n_nonembed"]) == built_counts(res.family, r["shape"])
    assert rungs[0]["n_params"] > before[1][0]["n_params"]


def test_a_finished_study_refuses_a_changed_model_even_with_replan(tmp_path, factory):
    out = tmp_path / "study"
    run_study(parse_spec(spec_of(factory(SMALL))), out)
    before = recorded(out)
    deep = parse_spec(spec_of(factory(DEEP)))
    with pytest.raises(UserError, match=r"now builds .* the model changed .*; use a new --out"):
        run_study(deep, out)
    with pytest.raises(UserError, match="--replan re-plans only unfinished rungs, but rung 0 "
                                        "finished with another model"):
        run_study(deep, out, replan=True)
    # Same parameter counts, another model: the factory's code fingerprint tells them apart.
    with pytest.raises(UserError, match="the code that builds this study's models changed"):
        run_study(parse_spec(spec_of(factory(GELU))), out)
    assert recorded(out) == before
    # The factory as it was: the study resumes (nothing to train) and keeps its records.
    summary = run_study(parse_spec(spec_of(factory(SMALL))), out)
    assert [r["n_params"] for r in summary["rungs"]] == [r["n_params"] for r in before[1]]


def test_a_rung_checks_its_model_before_it_trains(factory):
    from scalelab.planned import check_built

    spec = parse_spec(spec_of(factory(SMALL)))
    res = resolve(spec)
    plan = plan_ladder(spec, res.task, res.family)[0]
    check_built(res.family, plan)  # as planned: no error
    resolve_deep = resolve(parse_spec(spec_of(factory(DEEP))))
    with pytest.raises(UserError, match=f"rung 0: custom family: factory .* at knob "
                                        f"{plan.shape['knob']} now builds"):
        check_built(resolve_deep.family, plan)


def test_a_b309b61_study_passes_the_model_check_and_records_its_fingerprint(tmp_path):
    from scalelab.planned import check_resume

    folder = tmp_path / "v1"
    shutil.copytree(V1_FIXTURE, folder,
                    ignore=lambda d, names: [n for n in names if n.endswith(("-wal", "-shm"))])
    spec = load_spec(folder / "spec.yaml")
    res = resolve(spec)
    plans = plan_ladder(spec, res.task, res.family)
    with StudyStore.create_or_open(folder) as store:  # upgraded from schema 1 in place
        before = store.rungs()
        assert store.study()["model"] is None
        assert check_resume(store, res.family, plans) == []
        assert store.study()["model"] == {"family": "gpt"}
        assert store.rungs() == before
