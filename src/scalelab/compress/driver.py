"""The compression driver: make, measure and record one variant per planned method.

For each method: the registry's object `make`s the variant (its model, saved file, counts,
settings); the driver measures it with `train.measure.measure_model`, the one harness of the
rungs (the task's validation loss and metrics on the same fixed final batches,
`spec.train.final_eval_tokens` units; latency at the spec's batch sizes on
`task.example_input`; peak memory), and records a `records.Variant` in the store. Its size is the
bytes of its saved file under `variants/` in the study folder. The base rung's latency is measured
again right before each variant's, so `extra.speedup` compares two numbers taken under the same
machine load; `extra.base_latency_ms` holds the medians it divides, with their IQRs
(`base_latency_iqr_ms`) and flags (`base_latency_unstable`). Every latency series whose IQR is
large against its median is measured twice and flagged when still unstable (`scalelab.latency`).

Notes on the stored fields:
- `peak_mem_bytes` of a variant is the peak over its evaluation and latency runs (inference),
  while a rung's is over its training.
- `n_params` of a sparse variant counts the stored (non-zero) parameters; the dense count is in
  `extra.n_params_dense`. Quantized and cast variants keep the rung's counts.
- int8 runs in ONNX Runtime on the CPU (see quantize.py); on a CUDA study its latency is a CPU
  latency (`extra.measured_on`, no `speedup` against the CUDA rung), compared with the fp32 graph
  in the same runtime.
- The task's metrics (accuracy and error for classifiers, RMSE for regression, bits per byte for
  byte LMs) are `extra.metrics`, the base rung's `extra.base_metrics` (the variants table has no
  metrics column).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

import torch

from scalelab import latency
from scalelab.compress.base import Context, ProgressFn, get_method
from scalelab.compress.load import load_rung_model
from scalelab.compress.plan import CompressPlan, plan_compress
from scalelab.records import Variant
from scalelab.train import measure

if TYPE_CHECKING:
    from scalelab.models.base import Family
    from scalelab.spec import StudySpec
    from scalelab.store import StudyStore
    from scalelab.tasks.base import Task

VARIANTS_DIR = "variants"


def _as_variant(row: dict) -> Variant:
    return Variant(**{f.name: row.get(f.name) for f in fields(Variant)})


def _kept(store: StudyStore, name: str, stored: dict[str, dict]) -> bool:
    old = stored.get(name)
    return bool(old and (store.folder / ((old.get("extra") or {}).get("file") or "-")).is_file())


def compress_study(store: StudyStore, spec: StudySpec, task: Task | None, family: Family | None,
                   device: torch.device, rung: str | int = "largest",
                   methods: Sequence[str] | str | None = None, *,
                   on_event: Callable[[str], None] | None = None,
                   on_progress: ProgressFn | None = None,
                   plan: CompressPlan | None = None, redo: bool = False) -> list[Variant]:
    """Make, measure and record one variant per method of `rung`; returns the variants in method
    order. `methods=None`: the default methods that apply (see `plan.plan_compress`).

    With `redo=False` (what `scalelab run` does on every invocation, resumes included) a variant
    that is already stored with its file is kept, not remade; `scalelab compress` passes
    `redo=True` and remakes every variant it is asked for. `task` and `family` may be None only
    when every variant is kept."""
    if plan is None:
        plan = plan_compress(store.rungs(), rung, methods,
                             getattr(family, "name", None), getattr(task, "objective", None))
    row = plan.rung
    say = on_event or (lambda _msg: None)
    stored = {v["name"]: v for v in store.variants()}
    todo, records = [], {}
    for m, name in zip(plan.methods, plan.names(), strict=True):
        if not redo and _kept(store, name, stored):
            say(f"{name}: already in the study, kept")
            records[name] = _as_variant(stored[name])
        else:
            todo.append((m, name))
    if not todo:
        return [records[name] for name in plan.names()]
    if task is None or family is None:
        raise TypeError("compress_study needs the study's task and family to make variants")
    vdir = store.folder / VARIANTS_DIR
    vdir.mkdir(parents=True, exist_ok=True)
    base = load_rung_model(store.folder, row, family, device)
    ctx = Context(spec, task, family, device, row, base, vdir, plan.students,
                  store.study() or {}, on_progress)
    m_spec = spec.measure
    eval_units = spec.train.final_eval_tokens
    base_metrics = row.get("metrics")

    for m, name in todo:
        method = get_method(m.kind)
        say(f"{name}: {method.describe(m)}")
        torch.manual_seed(0)
        built = method.make(ctx, m, name)
        mdev = built.device or device
        # The base rung is timed right before its variant, so a speedup compares two numbers
        # taken under the same machine load.
        base_lat = (measure.latencies(base, task, device, m_spec.latency_batches,
                                      m_spec.latency_repeats) if mdev == device else None)
        measured = measure.measure_model(built.model, task, mdev, eval_units,
                                         m_spec.latency_batches, m_spec.latency_repeats)
        val = measured["val_loss"]
        if val is None or not math.isfinite(val):
            val = None
        measured["val_loss"] = val
        extra = dict(built.extra)
        extra.update({
            "file": str(built.path.relative_to(store.folder)),
            "measured_on": str(mdev),
            "metrics": measured["metrics"],
            "base_metrics": base_metrics,
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
            name=name, of_rung=row["rung"], method=m.kind,
            settings={"method": m.text, **built.settings},
            n_params=int(built.n_params), n_nonembed=int(built.n_nonembed),
            bytes=int(built.bytes), val_loss=val, latency_ms=measured["latency_ms"],
            peak_mem_bytes=measured["peak_mem_bytes"], extra=extra)
        store.record_variant(variant.to_dict())
        records[name] = variant
        lat = {b: round(v, 3) for b, v in latency.medians(measured["latency_ms"]).items()}
        unsteady = latency.unstable_batches(measured["latency_ms"])
        say(f"{name}: loss {val if val is None else round(val, 4)}, {built.bytes:,} bytes, "
            f"latency ms {lat}" + (f" (UNSTABLE at batch {', '.join(unsteady)}: IQR over "
                                   f"{latency.UNSTABLE_IQR:.0%} of the median, measured twice; "
                                   "the cores were busy: `measure: {threads: 1}` avoids waiting "
                                   "for a second thread on a shared machine)"
                                   if unsteady else ""))
    return [records[name] for name in plan.names()]


__all__ = ["VARIANTS_DIR", "compress_study"]
