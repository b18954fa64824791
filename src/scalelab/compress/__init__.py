"""Compressed variants of a trained rung, measured like the rungs and stored in study.db.

`compress_study(store, spec, task, device, rung, methods)` makes one variant per method (syntax in
`scalelab.compress.methods`) of one trained rung. Every variant is re-evaluated on the same
validation windows as the rungs (`task.eval_windows(spec.train.final_eval_tokens, block_size)`)
and measured with the rungs' harness (`scalelab.train.measure`: eval_loss, latency_ms at the
spec's latency batches, PeakMemory); its size is the bytes of its saved file under
`variants/` in the study folder. The base rung's latency is measured again right before each
variant's, so `extra.speedup` compares two numbers taken under the same machine load.

Notes on the stored fields:
- `peak_mem_bytes` of a variant is the peak over its evaluation and latency runs (inference),
  while a rung's is over its training.
- `n_params` of a sparse variant counts the stored (non-zero) parameters; the dense count is in
  `extra.n_params_dense`. Quantized and cast variants keep the rung's counts.
- int8 runs in ONNX Runtime on the CPU (see quantize.py); on a CUDA study its latency is a CPU
  latency (`extra.measured_on`), compared with the fp32 graph in the same runtime.
- Recovery fine-tunes (`+ft`) run the rung's own training loop for FINETUNE_FRACTION of the
  rung's tokens at FINETUNE_LR_FRACTION of its learning rate (warm-up free cosine), on batches
  from a different seed than the rung's.

Validation (`plan_compress`) happens before anything is written: unknown methods, ratios outside
(0, 1), rungs that do not exist or are not trained, and studies without trained rungs are
`UserError`s.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scalelab.compress.methods import Method, parse_methods, parse_rung
from scalelab.errors import UserError

VARIANTS_DIR = "variants"
FINETUNE_FRACTION = 0.1
FINETUNE_LR_FRACTION = 0.2
FINETUNE_SEED_OFFSET = 100_000

__all__ = ["CompressPlan", "compress_study", "load_variant", "plan_compress"]


@dataclass
class CompressPlan:
    rung: dict  # the rung's row from the store
    methods: list[Method]
    students: dict[Method, dict] = field(default_factory=dict)  # distill -> student rung row

    def names(self) -> list[str]:
        r = self.rung["rung"]
        return [m.variant_name(r, self.students[m]["rung"] if m in self.students else None)
                for m in self.methods]


def done_rungs(rungs: list[dict]) -> list[dict]:
    return [r for r in rungs if r["status"] == "done" and r.get("checkpoint")]


def plan_compress(rungs: list[dict], rung: str | int, methods: list[str] | str) -> CompressPlan:
    """Check every argument against the study; raises UserError before anything is written."""
    parsed = parse_methods(methods)
    which = parse_rung(rung)
    done = done_rungs(rungs)
    if not done:
        raise UserError("the study has no trained rungs yet; run `scalelab run` on it first")
    if which == "largest":
        target = max(done, key=lambda r: (r["n_nonembed"], r["rung"]))
    else:
        rows = {r["rung"]: r for r in rungs}
        if which not in rows:
            known = ", ".join(str(r["rung"]) for r in rungs)
            raise UserError(f"rung {which} does not exist in this study (rungs: {known})")
        target = rows[which]
        if target not in done:
            raise UserError(f"rung {which} is not trained (status {target['status']}); "
                            "choose a finished rung")
    plan = CompressPlan(target, parsed)
    smaller = [r for r in done if r["n_nonembed"] < target["n_nonembed"]]
    for m in parsed:
        if m.kind != "distill":
            continue
        if m.value is None:
            if not smaller:
                raise UserError(f"distill needs a trained rung smaller than rung "
                                f"{target['rung']} to take its shape as the student")
            plan.students[m] = max(smaller, key=lambda r: r["n_nonembed"])
        else:
            student = next((r for r in rungs if r["rung"] == int(m.value)), None)
            if student is None or student not in done:
                raise UserError(f"{m.text}: rung {int(m.value)} is not a trained rung")
            if student not in smaller:
                raise UserError(f"{m.text}: the student rung must be smaller than the teacher "
                                f"(rung {target['rung']})")
            plan.students[m] = student
    names = plan.names()
    if len(set(names)) != len(names):
        raise UserError("two methods name the same variant; list each method once")
    return plan


# -- shared pieces ---------------------------------------------------------------------------


def rung_plan(row: dict):
    from scalelab.ladder import RungPlan

    return RungPlan(**row["plan"])


def load_rung_model(folder: Path, row: dict, device=None):
    """The trained fp32 model of a rung, from its safetensors checkpoint."""
    from safetensors.torch import load_model

    from scalelab.models import gpt

    path = Path(folder) / row["checkpoint"]
    if not path.is_file():
        raise UserError(f"rung {row['rung']}'s weights are missing ({path})")
    model = gpt.build(rung_plan(row).config())
    load_model(model, str(path))
    return model.to(device or "cpu").eval()


@dataclass
class _Ctx:
    store: object
    spec: object
    task: object
    device: object
    row: dict
    base: object
    windows: tuple
    vdir: Path
    on_event: Callable[[str], None]
    on_progress: Callable[[str, int, int, float], None] | None

    @property
    def plan(self):
        return rung_plan(self.row)

    def measure(self, model, device=None) -> dict:
        from scalelab.train import measure

        device = device or self.device
        p = self.plan
        with measure.PeakMemory(device) as mem:
            val = measure.eval_loss(model, self.windows, device)
            lat = {str(b): measure.latency_ms(model, b, p.block_size, p.vocab_size, device,
                                              repeats=self.spec.measure.latency_repeats)
                   for b in self.spec.measure.latency_batches}
        return {"val_loss": val, "latency_ms": lat, "peak_mem_bytes": mem.peak_bytes}

    def progress(self, name: str, total: int):
        if self.on_progress is None:
            return None
        return lambda step, loss: self.on_progress(name, step, total, loss)


def _finetune(ctx: _Ctx, model, name: str) -> dict:
    """Short recovery fine-tune of `model` in place with the rung's own training loop."""
    from scalelab.train.loop import train_rung

    p = ctx.plan
    steps = max(1, round(FINETUNE_FRACTION * p.steps))
    ft = dataclasses.replace(p, steps=steps, tokens=steps * p.batch_size * p.block_size,
                             lr=FINETUNE_LR_FRACTION * p.lr, warmup_steps=0,
                             seed=p.seed + FINETUNE_SEED_OFFSET)
    ckpt = ctx.vdir / f"{name}-ckpt"
    out = train_rung(ft, ctx.task, ctx.spec.train, ctx.device, ckpt,
                     on_progress=ctx.progress(f"{name} fine-tune", steps), model=model)
    shutil.rmtree(ckpt, ignore_errors=True)
    return {"finetune_steps": out.steps, "finetune_tokens": out.tokens,
            "finetune_lr": ft.lr, "finetune_seconds": out.train_seconds,
            "finetune_status": out.status}


def _smaller_model(ctx, model, name: str, m: Method, p, settings: dict, extra: dict) -> dict:
    """A structurally smaller model (pruned, factored): optional recovery fine-tune, saved file,
    exact counts."""
    from scalelab.models import gpt

    if m.finetune:
        extra.update(_finetune(ctx, model, name))
    path = ctx.vdir / f"{name}.safetensors"
    n, ne = gpt.count_params(model)
    extra["nonembed_ratio"] = ne / p.n_nonembed
    return {"model": model, "path": path, "bytes": _save(model, path), "n_params": n,
            "n_nonembed": ne, "settings": {**settings, "finetune": m.finetune}, "extra": extra}


def _save(model, path: Path) -> int:
    from scalelab.train.checkpoint import save_weights

    return save_weights(model, path)


def _make(ctx: _Ctx, m: Method, name: str, student: dict | None) -> dict:
    """Build one variant; returns the fields it adds to its record before measurement."""
    import torch

    from scalelab.compress import lowrank, prune, quantize
    from scalelab.models import gpt

    p = ctx.plan
    base = ctx.base
    if m.kind in ("fp16", "bf16"):
        path = ctx.vdir / f"{name}.safetensors"
        model, nbytes = quantize.cast(copy.deepcopy(base), m.kind, path)
        n, ne = gpt.count_params(model)
        return {"model": model, "path": path, "bytes": nbytes, "n_params": n, "n_nonembed": ne,
                "settings": {"dtype": m.kind},
                "extra": {"note": f"weights stored and computed in {m.kind}"}}
    if m.kind == "int8":
        path = ctx.vdir / f"{name}.onnx"
        q, fp32, nbytes, extra = quantize.int8_dynamic(base, p.block_size, p.vocab_size, path)
        cpu = torch.device("cpu")
        fp32_lat = ctx.measure(fp32, cpu)["latency_ms"]
        Path(fp32.path).unlink(missing_ok=True)
        extra["fp32_onnxruntime_latency_ms"] = {b: v["median"] for b, v in fp32_lat.items()}
        return {"model": q, "path": path, "bytes": nbytes, "n_params": p.n_params,
                "n_nonembed": p.n_nonembed, "settings": {"weight_type": "QInt8",
                                                         "per_channel": False},
                "extra": extra, "device": cpu}
    if m.kind == "prune":
        scores = prune.importance(base, ctx.task, p.block_size, ctx.device)
        model, structure = prune.prune_structured(base, m.value, scores)
        return _smaller_model(ctx, model, name, m, p, {"ratio": m.value, "structure": structure},
                              {"heads_before": p.n_head, "ffn_before": 4 * p.d_model})
    if m.kind == "sparse":
        model, facts = prune.sparsify(base, m.value)
        path = ctx.vdir / f"{name}.safetensors"
        nbytes = prune.save_sparse(model, path)
        n, ne = gpt.count_params(model)
        zeros = int(round(facts["sparsity"] * facts["pruned_weights"]))
        facts.update({"n_params_dense": n, "format": prune.SPARSE_FORMAT,
                      "speed_claim": None,
                      "note": "dense kernels on zero-filled weights: latency measured, "
                              "no speedup claimed"})
        return {"model": model, "path": path, "bytes": nbytes, "n_params": n - zeros,
                "n_nonembed": ne - zeros, "settings": {"sparsity": m.value}, "extra": facts}
    if m.kind == "lowrank":
        model, ranks = lowrank.factorize(base, m.value)
        return _smaller_model(ctx, model, name, m, p, {"rank_fraction": m.value, "ranks": ranks},
                              {"factored_layers": len(ranks)})
    if m.kind == "distill":
        from scalelab.compress import distill

        splan = rung_plan(student)
        ckpt = ctx.vdir / f"{name}-ckpt"
        outcome, extra = distill.train_student(
            base, splan, ctx.task, ctx.spec.train, ctx.device, ckpt,
            on_progress=ctx.progress(f"{name} (student of rung {p.rung})", splan.steps))
        shutil.rmtree(ckpt, ignore_errors=True)
        model = outcome.model
        study = ctx.store.study() or {}
        recorded = (study.get("corpus") or {}).get("sha256")
        extra.update({
            "student_rung": student["rung"], "teacher_rung": p.rung,
            "teacher_val_loss": ctx.row["val_loss"],
            "baseline": f"rung {student['rung']} (same shape, plan, seed and token stream, "
                        "no teacher)",
            "baseline_val_loss": student["val_loss"],
            "baseline_bytes": student.get("checkpoint_bytes"),
            "student_status": outcome.status, "student_train_seconds": outcome.train_seconds,
            "corpus_matches_study": recorded == ctx.task.fingerprint().get("sha256")
            if recorded else None,
        })
        path = ctx.vdir / f"{name}.safetensors"
        n, ne = gpt.count_params(model)
        return {"model": model, "path": path, "bytes": _save(model, path), "n_params": n,
                "n_nonembed": ne, "settings": {"student_rung": student["rung"],
                                               "temperature": distill.TEMPERATURE,
                                               "alpha": distill.ALPHA}, "extra": extra}
    raise AssertionError(m.kind)


def compress_study(store, spec, task, device, rung: str | int = "largest",
                   methods: list[str] | str | None = None,
                   on_event: Callable[[str], None] | None = None,
                   on_progress: Callable[[str, int, int, float], None] | None = None,
                   plan: CompressPlan | None = None, redo: bool = False) -> list[dict]:
    """Make, measure and record one variant per method of `rung`; returns the records.

    With `redo=False` (what `scalelab run` does on every invocation, resumes included) a variant
    that is already stored with its file is kept, not remade; `scalelab compress` passes
    `redo=True` and remakes every variant it is asked for."""
    import math

    import torch

    from scalelab.compress.methods import DEFAULT_METHODS
    from scalelab.train import measure

    if plan is None:
        plan = plan_compress(store.rungs(), rung, methods if methods else DEFAULT_METHODS)
    row = plan.rung
    say = on_event or (lambda _msg: None)
    vdir = store.folder / VARIANTS_DIR
    stored = {v["name"]: v for v in store.variants()}
    todo, records = [], {}
    for m, name in zip(plan.methods, plan.names(), strict=True):
        old = stored.get(name)
        if not redo and old and (store.folder / (old["extra"] or {}).get("file", "-")).is_file():
            say(f"{name}: already in the study, kept")
            records[name] = old
        else:
            todo.append((m, name))
    if not todo:
        return list(records.values())
    vdir.mkdir(parents=True, exist_ok=True)
    p = rung_plan(row)
    base = load_rung_model(store.folder, row, device)
    windows = task.eval_windows(spec.train.final_eval_tokens, p.block_size)
    ctx = _Ctx(store, spec, task, device, row, base, windows, vdir, say, on_progress)

    def base_latency() -> dict:
        return {str(b): measure.latency_ms(base, b, p.block_size, p.vocab_size, device,
                                           repeats=spec.measure.latency_repeats)
                for b in spec.measure.latency_batches}

    for m, name in todo:
        say(f"{name}: {m.text}")
        torch.manual_seed(0)
        built = _make(ctx, m, name, plan.students.get(m))
        mdev = built.get("device", device)
        # The base rung is timed right before its variant, so a speedup compares two numbers
        # taken under the same machine load.
        base_lat = base_latency() if mdev == device else None
        measured = ctx.measure(built["model"], mdev)
        val = measured["val_loss"]
        if not math.isfinite(val):
            val = None
        extra = dict(built["extra"])
        extra.update({
            "file": str(built["path"].relative_to(store.folder)),
            "measured_on": str(mdev),
            "base_val_loss": row["val_loss"],
            "loss_delta": None if val is None else val - row["val_loss"],
            "base_bytes": row.get("checkpoint_bytes"),
            "size_ratio": (row["checkpoint_bytes"] / built["bytes"]
                           if row.get("checkpoint_bytes") else None),
            "base_latency_ms": ({b: v["median"] for b, v in base_lat.items()}
                                if base_lat else None),
            "speedup": ({b: base_lat[b]["median"] / v["median"]
                         for b, v in measured["latency_ms"].items() if b in base_lat}
                        if base_lat else None),
        })
        if m.kind == "distill":
            if val is not None and extra.get("baseline_val_loss") is not None:
                extra["loss_vs_baseline"] = val - extra["baseline_val_loss"]
        if m.kind == "int8":
            fp32 = extra["fp32_onnxruntime_latency_ms"]
            extra["speedup_vs_fp32_onnxruntime"] = {
                b: fp32[b] / v["median"] for b, v in measured["latency_ms"].items() if b in fp32}
        record = {
            "name": name, "of_rung": row["rung"], "method": m.kind,
            "settings": {"method": m.text, **built["settings"]},
            "n_params": int(built["n_params"]), "n_nonembed": int(built["n_nonembed"]),
            "bytes": int(built["bytes"]), "val_loss": val,
            "latency_ms": measured["latency_ms"], "peak_mem_bytes": measured["peak_mem_bytes"],
            "extra": extra,
        }
        store.record_variant(record)
        records[name] = record
        lat = {b: round(v["median"], 3) for b, v in measured["latency_ms"].items()}
        say(f"{name}: loss {val if val is None else round(val, 4)}, {built['bytes']:,} bytes, "
            f"latency ms {lat}")
    return [records[name] for name in plan.names()]


def load_variant(folder: Path, variant: dict, rungs: list[dict]):
    """Rebuild a stored variant as a CPU fp32 nn.Module (int8: its ONNX Runtime module)."""
    import torch
    from safetensors.torch import load_model

    from scalelab.compress import lowrank, prune
    from scalelab.models import gpt

    path = Path(folder) / variant["extra"]["file"]
    if not path.is_file():
        raise UserError(f"variant {variant['name']}'s file is missing ({path})")
    method, settings = variant["method"], variant["settings"] or {}
    rows = {r["rung"]: r for r in rungs}
    shape_of = settings["student_rung"] if method == "distill" else variant["of_rung"]
    cfg = rung_plan(rows[shape_of]).config()
    if method == "int8":
        from scalelab.export import OrtModule

        return OrtModule(path)
    model = gpt.build(cfg)
    if method in ("fp16", "bf16"):
        from scalelab.compress.quantize import CAST_DTYPES

        model = model.to(CAST_DTYPES[method])
        load_model(model, str(path))
        return model.float().eval()
    if method == "prune":
        load_model(prune.restructure(model, settings["structure"]), str(path))
    elif method == "lowrank":
        load_model(lowrank.restructure(model, settings["ranks"]), str(path))
    elif method == "sparse":
        prune.load_sparse(model, path)
    elif method == "distill":
        load_model(model, str(path))
    else:
        raise UserError(f"variant {variant['name']} has an unknown method {method!r}")
    return model.to(torch.float32).eval()
