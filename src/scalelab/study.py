"""One study, end to end: plan -> execute -> record -> fit -> outputs.

`run_study` is what `scalelab run` calls; `write_outputs` is what `scalelab report` calls. Both
only pass plain data between the stages (DESIGN.md's flow).
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from scalelab.errors import UserError
from scalelab.ladder import RungPlan, plan_ladder
from scalelab.spec import StudySpec
from scalelab.store import StudyStore
from scalelab.tasks import get_task
from scalelab.train import measure

RUN_COLUMNS = (
    "rung", "status", "n_params", "n_nonembed", "n_layer", "d_model", "n_head", "tokens", "steps",
    "lr", "val_loss", "val_bpb", "flops", "flops_6nd", "train_seconds", "tokens_per_s", "mfu",
    "peak_mem_bytes", "checkpoint_bytes", "latency_ms", "latency_iqr_ms", "diverged_step",
    "diverged_reason",
)
MIN_POINTS_FOR_FIT = 3


def default_out(spec: StudySpec) -> Path:
    """studies/<name>, with the name reduced to characters safe in a folder name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name).strip("-.") or "study"
    return Path("studies") / slug


def _comparable(spec: dict) -> dict:
    # The device may change between a run and its resume; the ladder and training may not.
    return {k: v for k, v in spec.items() if k != "device"}


def open_study(spec: StudySpec, out: Path) -> StudyStore:
    """Create the study folder, or reopen it to resume, checking it holds this same spec."""
    store = StudyStore.create_or_open(out)
    existing = store.study()
    dumped = spec.model_dump(mode="json")
    if existing is None:
        store.init_study(spec.name, spec.task.name, spec.family.name, dumped)
    elif _comparable(existing["spec"]) != _comparable(dumped):
        store.close()
        raise UserError(f"{out} holds a study with a different spec; "
                        "rerun with its own spec or choose another --out")
    return store


def run_study(
    spec: StudySpec,
    out: Path,
    device_name: str | None = None,
    progress: Callable[[RungPlan, int, float], None] | None = None,
    on_rung_done: Callable[[RungPlan, dict], None] | None = None,
    on_plan: Callable[[list[RungPlan]], None] | None = None,
) -> dict:
    """Train (or resume) every rung, fit the law, write outputs; returns the summary."""
    from scalelab.execute.local import run_rungs

    device = measure.resolve_device(device_name or spec.device)
    if spec.measure.threads:
        torch.set_num_threads(spec.measure.threads)
    with open_study(spec, out) as store:
        task = get_task(spec.task.name, root=spec.task.root)
        plans = plan_ladder(spec, task.vocab_size)
        store.add_rungs([p.to_dict() for p in plans])
        study = store.study()
        gemm_peak = study["gemm_peak_flops"]
        if gemm_peak is None:  # measured once per study, kept across resumes
            gemm_peak = measure.gemm_peak_flops(device)
            store.set_machine(measure.machine_info(device), task.fingerprint(), gemm_peak,
                              measure.vendor_peak_flops(device))
        if on_plan is not None:
            on_plan(plans)
        run_rungs(store, spec, task, plans, device, gemm_peak, progress, on_rung_done)
        if spec.compress is not None:
            from scalelab.compress import compress_study

            compress_study(store, spec, task, device, spec.compress.rung, spec.compress.methods)
        store.replace_fits(fit_rungs(store.rungs(), spec))
        return write_outputs(store)


def fit_rungs(rungs: list[dict], spec: StudySpec) -> list[dict]:
    """The power law L(N) = E + A·N^-alpha over finished rungs, with intervals and holdout."""
    done = [r for r in rungs if r["status"] == "done" and r["val_loss"] is not None]
    if len(done) < MIN_POINTS_FOR_FIT:
        return []
    from scalelab.laws import fit_study_power

    n = [r["n_nonembed"] for r in done]
    loss = [r["val_loss"] for r in done]
    return [fit_study_power(n, loss, bootstrap=spec.fit.bootstrap, seed=spec.fit.seed)]


def _flat_latency(record: dict) -> dict:
    """summary.json's latency: medians per batch in `latency_ms`, IQRs in `latency_iqr_ms`."""
    lat = record.get("latency_ms") or {}
    return {"latency_ms": {b: v["median"] for b, v in lat.items()},
            "latency_iqr_ms": {b: v["iqr"] for b, v in lat.items()}}


def _rung_summary(r: dict) -> dict:
    out = {k: r.get(k) for k in RUN_COLUMNS if k not in ("latency_ms", "latency_iqr_ms")}
    out["checkpoint"] = r.get("checkpoint")
    return out | _flat_latency(r)


def _variant_summary(v: dict) -> dict:
    return dict(v) | _flat_latency(v)


def build_summary(store: StudyStore) -> dict:
    study = store.study()
    if study is None:
        raise UserError(f"{store.folder} has no study recorded")
    machine = study["machine"] or {}
    return {
        "study": {
            "name": study["name"],
            "task": study["task"],
            "family": study["family"],
            "machine": machine.get("machine"),
            "device": machine.get("device"),
            "gemm_peak_flops": study["gemm_peak_flops"],
            "vendor_peak_flops": study["vendor_peak_flops"],
            "torch_version": machine.get("torch_version"),
            "python_version": machine.get("python_version"),
            "threads": machine.get("threads"),
            "platform": machine.get("platform"),
            "spec": study["spec"],
            "corpus": study["corpus"],
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(study["created"])),
        },
        "rungs": [_rung_summary(r) for r in store.rungs()],
        "fits": store.fits(),
        "variants": [_variant_summary(v) for v in store.variants()],
    }


def write_runs_csv(summary: dict, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        batches = sorted({b for r in summary["rungs"] for b in r["latency_ms"]}, key=int)
        cols = [c for c in RUN_COLUMNS if c not in ("latency_ms", "latency_iqr_ms")]
        writer.writerow(cols + [f"latency_ms_b{b}" for b in batches])
        for r in summary["rungs"]:
            writer.writerow([r.get(c) for c in cols] + [r["latency_ms"].get(b) for b in batches])


def write_outputs(store: StudyStore) -> dict:
    """summary.json, runs.csv and report.html, all derived from the database."""
    from scalelab.report.html import render_report

    summary = build_summary(store)
    folder = store.folder
    _atomic_write(folder / "summary.json", json.dumps(summary, indent=2))
    write_runs_csv(summary, folder / "runs.csv")
    from scalelab.compress.report import compression_section

    html = compression_section(summary)
    render_report(summary, store.curves(), folder / "report.html",
                  extra_sections=[("Compression", html)] if html is not None else None)
    return summary


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
