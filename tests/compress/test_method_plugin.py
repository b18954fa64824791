"""A compression method and an executor are each one class plus one registry line.

This module is the only file a new method and a new executor need: `RoundWeights` (every weight
matrix rounded to a grid of 2^B levels) and `LastFirst` (jobs in this process, the last one
first) are registered from here, and `scalelab compress` then parses, plans, makes, measures,
records, reports and lists the method, run by the executor, with nothing else edited.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_model

from scalelab.cli import main
from scalelab.compress import base, load_variant
from scalelab.compress.base import Argument, Built, CompressMethod, Context, Method, Style
from scalelab.execute import REGISTRY as EXECUTORS
from scalelab.execute.local import LocalExecutor
from scalelab.models.base import get_family
from scalelab.spec import parse_spec
from scalelab.storage import StudyStore
from scalelab.train.checkpoint import save_weights

COLOR = "#17becf"  # no built-in method draws in this colour


def round_to_grid(w: torch.Tensor, bits: int) -> torch.Tensor:
    """`w` on a symmetric uniform grid of 2^bits - 1 levels spanning its largest magnitude."""
    top = w.abs().max()
    if top == 0:
        return w.clone()
    step = top / (2 ** (bits - 1) - 1)
    return torch.round(w / step) * step


class RoundWeights(CompressMethod):
    """`round:B`: every weight matrix rounded to a per-tensor grid of 2^B - 1 levels, stored in
    fp32 (a quality study: the file is the rung's size)."""

    kind = "round"
    summary = "every weight matrix rounded to a uniform grid of 2^B - 1 levels; a quality study"
    argument = Argument("B", "bit width", integer=True, low=2, high=16, example="4")
    style = Style(COLOR, "h", label="rounded")

    def describe(self, method: Method) -> str:
        return f"every weight matrix rounded to {int(method.value or 0)} bits"

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        bits = int(method.value or 0)
        model = copy.deepcopy(ctx.base)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.copy_(round_to_grid(p, bits))
        path = ctx.file(name)
        n, ne = ctx.counts(model)
        return Built(model.eval(), path, save_weights(model, path), n, ne,
                     settings={"bits": bits}, extra={"levels": 2 ** bits - 1})

    def notes(self, variant: Mapping[str, Any], batch: str, unit: str) -> str:
        return f"weights on a grid of {variant['extra']['levels']} levels per matrix"

    def restore(self, family: Any, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        model = family.build(shape)
        load_model(model, str(path))
        return model.float().eval()


class LastFirst(LocalExecutor):
    """Jobs one after another in this process, the last one first."""

    name = "lastfirst"

    def run(self, jobs, work, emit) -> None:
        super().run(list(reversed(jobs)), work, emit)


@pytest.fixture
def plugins(monkeypatch):
    """The method and the executor registered: one line each."""
    monkeypatch.setitem(base.REGISTRY, "round", f"{__name__}:RoundWeights")
    monkeypatch.setitem(EXECUTORS, "lastfirst", f"{__name__}:LastFirst")


@pytest.fixture
def copied(study, tmp_path) -> Path:
    folder = tmp_path / "study"
    shutil.copytree(study, folder)
    return folder


def _scalelab(monkeypatch, capsys, *args: Any) -> tuple[int, str, str]:
    """The console script run in this process (where the plugins are registered): its exit
    code, stdout and stderr."""
    monkeypatch.setattr("sys.argv", ["scalelab", *map(str, args)])
    threads = torch.get_num_threads()  # compress sets the study's thread count in-process
    try:
        with pytest.raises(SystemExit) as stop:
            main()
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return stop.value.code or 0, out, err


def test_a_registered_method_runs_end_to_end_on_a_registered_executor(plugins, copied,
                                                                     monkeypatch, capsys):
    code, out, err = _scalelab(monkeypatch, capsys, "compress", copied, "--methods",
                               "round:4,round:8", "--executor", "lastfirst")
    assert code == 0, err
    assert "r1-round4: every weight matrix rounded to 4 bits" in out  # its describe()
    with StudyStore.open_readonly(copied) as store:
        variants = {v["name"]: v for v in store.variants()}
        rungs = store.rungs()
        spec = parse_spec(store.study()["spec"])
    made = [variants["r1-round4"], variants["r1-round8"]]
    for v, bits in zip(made, (4, 8), strict=True):
        assert v["method"] == "round" and v["settings"] == {"method": f"round:{bits}",
                                                            "bits": bits}
        assert v["bytes"] == (copied / v["extra"]["file"]).stat().st_size
        assert v["val_loss"] is not None and set(v["latency_ms"]) == {"1", "32"}
    # Measured, not copied: 4 bits moves the loss more than 8 bits does.
    assert abs(made[0]["extra"]["loss_delta"]) > abs(made[1]["extra"]["loss_delta"])
    # The executor ran them: the job listed last was recorded first.
    assert made[1]["created"] < made[0]["created"]
    # The stored variant restores through the method: 4 bits leave at most 15 levels a matrix.
    family = get_family(spec.family.name, **spec.family.options)
    model = load_variant(copied, made[0], rungs, family)
    weights = [p for p in model.parameters() if p.dim() >= 2]
    assert weights and all(len(torch.unique(w)) <= 15 for w in weights)

    summary = json.loads((copied / "summary.json").read_text())
    assert {"r1-round4", "r1-round8"} <= {v["name"] for v in summary["variants"]}
    report = (copied / "report.html").read_text()
    assert "weights on a grid of 15 levels per matrix" in report
    assert COLOR in report and "rounded" in report  # its marker colour and legend label


def test_list_shows_the_registered_method_and_executor(plugins, monkeypatch, capsys):
    code, out, _ = _scalelab(monkeypatch, capsys, "list", "methods")
    assert code == 0
    assert "syntax: round:B" in out and "a uniform grid of 2^B - 1 levels" in out
    assert "bit width, a whole number >= 2: round:4" in out
    code, out, _ = _scalelab(monkeypatch, capsys, "list", "executors")
    assert code == 0
    assert "lastfirst  jobs one after another in this process, the last one first" in out


@pytest.mark.parametrize("args, line", [
    (["--methods", "round:1"], "round:1: bit width must be at least 2 and at most 16, got 1"),
    (["--methods", "round"], "round: round needs a bit width, e.g. round:4"),
    (["--methods", "round:4+ft"], "round:4+ft: '+ft' (recovery fine-tune) applies to prune and "
                                  "lowrank only"),
    (["--methods", "round:4", "--executor", "lastfirst", "--address", "127.0.0.1:1"],
     "--address needs --executor ray"),
])
def test_the_plugins_bad_input_is_one_line(plugins, copied, monkeypatch, capsys, args, line):
    before = (copied / "study.db").read_bytes()
    code, out, err = _scalelab(monkeypatch, capsys, "compress", copied, *args)
    assert (code, err) == (2, f"error: {line}\n")
    assert (copied / "study.db").read_bytes() == before
