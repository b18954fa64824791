"""The plain data passed between stages: what a rung is to train, what it measured, a variant.

Everything here is a dataclass of JSON-able fields; the store keeps them as rows and JSON, the
report and summary.json read them back as dicts (`to_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

FINISHED = ("done", "diverged")


@dataclass(frozen=True)
class RungPlan:
    """One rung of a ladder, fully determined by the spec (so a resumed study re-plans the same).

    shape: the family's opaque shape dict (everything `family.build` needs).
    D: training units the rung sees (tokens, bytes or examples; `unit` says which), a whole
    number of steps of `batch_size` examples (`units_per_step` units each).
    key_n, key_d, repeat: the rung's key in the study: target N, D, and the seed repeat. A study
    holds one rung per key.
    """

    rung: int
    family: str
    shape: dict
    target_n: float
    n_params: int
    n_nonembed: int
    D: int
    unit: str
    steps: int
    batch_size: int
    units_per_step: int
    lr: float
    warmup_steps: int
    seed: int
    repeat: int = 0
    describe: str = ""  # the family's short text for the shape ("4x144")

    @property
    def key(self) -> tuple[float, int, int]:
        return (float(self.target_n), int(self.D), int(self.repeat))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RungPlan:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class RungResult:
    """What a trained rung measured (status `done`), or why it stopped (`diverged`)."""

    status: str
    D: int
    steps: int
    train_seconds: float
    val_loss: float | None = None
    train_loss: float | None = None  # on fixed windows of the train split, same size as val
    metrics: dict[str, float] = field(default_factory=dict)  # the task's metrics on val
    flops: float | None = None
    flops_6nd: float | None = None
    units_per_s: float | None = None
    mfu: float | None = None
    peak_mem_bytes: int | None = None
    checkpoint_bytes: int | None = None
    latency_ms: dict[str, dict] | None = None
    checkpoint: str | None = None
    diverged_step: int | None = None
    diverged_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Variant:
    """A compressed (or otherwise derived) model of a rung, measured like the rungs."""

    name: str
    of_rung: int
    method: str
    settings: dict[str, Any]
    n_params: int
    n_nonembed: int
    bytes: int
    val_loss: float | None
    latency_ms: dict[str, dict]
    peak_mem_bytes: int | None
    extra: dict[str, Any]

    def to_dict(self) -> dict:
        return asdict(self)
