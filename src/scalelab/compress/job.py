"""One compressed variant as a job of the executor: make it and measure it, wherever the job runs
(this process or a Ray worker). Writes the variant's file under the study's `variants/` folder
only; the measurements go back as the record of its `Finished` event, which the driver stores
(`driver.py`).

The measurement is the rungs' own harness (`train.measure.measure_model`): the task's validation
loss and metrics on the same fixed final batches, latency at the spec's batch sizes, peak
memory. The base rung's latency is measured again right before its variant's, in the same worker,
so `extra.speedup` compares two numbers taken under the same machine load.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scalelab import latency
from scalelab.compress.base import Context, Method, get_method
from scalelab.compress.load import load_rung_model
from scalelab.execute.base import Emit, Finished, Job, Progress, Started, Workload
from scalelab.records import Variant
from scalelab.train import measure

VARIANTS_DIR = "variants"


@dataclass(frozen=True)
class VariantPayload:
    """What a variant job needs beyond the workload: its method and name, the base rung's store
    row, the study folder (where the rung's weights are and the variant's file goes), the
    distillation students the plan chose, and the store's study record."""

    method: Method
    name: str
    row: dict
    folder: str
    students: dict[Method, dict] = field(default_factory=dict)
    study: dict = field(default_factory=dict)


def make_variant(job: Job, work: Workload, emit: Emit) -> Finished:
    """Make the job's variant from its base rung and measure it; its Finished carries the
    variant's record (`records.Variant` as a dict)."""
    p: VariantPayload = job.payload
    task, spec = work.task, work.spec
    device = measure.resolve_device(work.device)
    emit(Started(job.key, os.getpid(), socket.gethostname(), 0))
    folder = Path(p.folder)
    vdir = folder / VARIANTS_DIR
    vdir.mkdir(parents=True, exist_ok=True)
    base = load_rung_model(folder, p.row, work.family, device)

    def on_progress(_label: str, step: int, total: int, loss: float) -> None:
        emit(Progress(job.key, step, loss, total))

    ctx = Context(spec, task, work.family, device, p.row, base, vdir, p.students, p.study,
                  on_progress)
    method = get_method(p.method.kind)
    torch.manual_seed(0)
    built = method.make(ctx, p.method, p.name)
    mdev = built.device or device
    m_spec = spec.measure
    # The base rung is timed right before its variant, so a speedup compares two numbers taken
    # under the same machine load.
    base_lat = (measure.latencies(base, task, device, m_spec.latency_batches,
                                  m_spec.latency_repeats) if mdev == device else None)
    measured = measure.measure_model(built.model, task, mdev, spec.train.final_eval_tokens,
                                     m_spec.latency_batches, m_spec.latency_repeats,
                                     spec.train.precision)
    val = measured["val_loss"]
    if val is None or not math.isfinite(val):
        val = None
    measured["val_loss"] = val
    row = p.row
    extra = dict(built.extra)
    extra.update({
        "file": str(built.path.relative_to(folder)),
        "measured_on": str(mdev),
        "metrics": measured["metrics"],
        "base_metrics": row.get("metrics"),
        "base_val_loss": row["val_loss"],
        "loss_delta": None if val is None else val - row["val_loss"],
        "base_bytes": row.get("checkpoint_bytes"),
        "size_ratio": (row["checkpoint_bytes"] / built.bytes
                       if row.get("checkpoint_bytes") else None),
        **(latency.flat(base_lat, "base_") if base_lat else {"base_latency_ms": None}),
        "speedup": latency.speedups(base_lat, measured["latency_ms"]) if base_lat else None,
    })
    extra.update(method.after_measure(built, measured))
    variant = Variant(
        name=p.name, of_rung=row["rung"], method=p.method.kind,
        settings={"method": p.method.text, **built.settings},
        n_params=int(built.n_params), n_nonembed=int(built.n_nonembed),
        bytes=int(built.bytes), val_loss=val, latency_ms=measured["latency_ms"],
        peak_mem_bytes=measured["peak_mem_bytes"], extra=extra)
    return Finished(job.key, None, record=variant.to_dict())
