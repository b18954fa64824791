"""Checkpoints of one rung: safetensors weights plus optimizer, RNG and progress state.

A checkpoint is a folder `step-000123/` holding `model.safetensors` and `state.pt`. It is written
under a temporary name and renamed into place, so a kill at any moment leaves either the old
checkpoint or the new one, never half of one. Older checkpoints are removed after the rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

PREFIX = "step-"


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    for f in (tmp / "model.safetensors", tmp / "state.pt"):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in folder.glob(f"{PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_branch_start(folder: Path, step: int, model: torch.nn.Module, state: dict) -> None:
    """A trunk's resume point at `step`, written as the first resume point of a branch's folder,
    unless the branch already holds one at or past it (it has started: rewriting would undo
    its progress; an equal one is the same state, since training is deterministic)."""
    last = latest_checkpoint(folder)
    if last is not None and int(last.name.removeprefix(PREFIX)) >= step:
        return
    save_checkpoint(folder, step, model, state)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint; leftovers of an interrupted write are cleared."""
    if not folder.exists():
        return None
    for tmp in folder.glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    done = sorted(folder.glob(f"{PREFIX}*"))
    return done[-1] if done else None


def load_checkpoint(path: Path, model: torch.nn.Module) -> dict:
    load_model(model, str(path / "model.safetensors"), device=str(next(model.parameters()).device))
    return torch.load(path / "state.pt", weights_only=False)


def save_weights(model: torch.nn.Module, path: Path) -> int:
    """Final weights of a model as one safetensors file, written atomically; returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path)
    return path.stat().st_size
