"""The Pareto frontier of a study's models and `recommend()` under constraints.

A model is a finished rung (status `done`) or a variant, each as in summary.json's `rungs` or
`variants`, plus three keys added here: `kind` ("rung" or "variant"), `name` (a rung is named
`r<index>`, a variant keeps its own name) and, for rungs, `bytes` (= checkpoint_bytes, the saved
weights file, as a variant's `bytes` is its saved file).

Objectives, all minimised: validation loss, latency at the chosen batch size (median ms), bytes.
A model dominates another when it is no worse on all three and better on at least one; the
frontier is the set of models nobody dominates. Models that lack one of the three numbers are
left out (and counted in `skipped`).

Choice rule: among the models that meet every constraint given (value <= limit), the one with
the lowest loss. Losses that round to the same multiple of LOSS_TIE (1e-4 nats, below what the
validation split resolves) count as a tie, broken by fewer bytes, then lower latency, then
name. The choice always lies on the frontier.

Unstable latencies: a model whose latency at the chosen batch is flagged (`scalelab.latency`: its
IQR over 30% of its median, in each of its re-measurements) is still a candidate, judged on its
median as measured, but the answer names it: `latency_flagged` on each model, the list
`unstable`, and the reason says so when the choice (or the closest) is one of them, since its
latency may be far from what a quiet machine gives.

When nothing meets the constraints, `closest` is the model with the smallest total normalised
violation, sum over constraints of max(0, value / limit - 1) (so 10% over a latency budget weighs
the same as 10% over a size budget); ties are broken by lower loss, then name.

Fine-tuned models (`scalelab finetune`, summary.json's `finetunes`) are variants of a rung on
ANOTHER task, so their losses are not comparable with the rungs' own: every model carries the
`task` its loss is measured on, and one plane holds one task. `task=None` (the default) is the
study's own task (rungs and compressed variants, as before); `task=NAME` (a second task's slug,
e.g. `stdlib-test`) is the plane of that task: its fine-tuned models, kind "variant", method
`finetune-<method>` (e.g. finetune-lora-r4), `bytes` = a whole model file of it (a LoRA merged
into its rung, as `scalelab export --finetune NAME --merge` writes it; the adapter alone is
`adapter_bytes`) and the latency of that shipped model; plus, for language models, every rung
as it is (not fine-tuned, kind "rung"), scored by its zero-shot loss on that task, so "is
fine-tuning worth it at this budget" is on the same plane. A classifier's rung without its new
head cannot be scored on the new task and is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalelab import latency
from scalelab.errors import UserError
from scalelab.values import finite

LOSS_TIE = 1e-4
METRICS = ("val_loss", "latency", "bytes")
CONSTRAINT_LABEL = {"val_loss": "loss", "latency": "latency", "bytes": "bytes"}


def finetune_tasks(summary: Mapping[str, Any]) -> list[str]:
    """The second tasks the study has finished fine-tunes on (their slugs)."""
    return sorted({str(f.get("task")) for f in summary.get("finetunes") or []
                   if f.get("status") == "done"})


def models(summary: Mapping[str, Any], task: str | None = None) -> list[dict]:
    """The models on one task's plane, with `kind`, `name`, `bytes` and `task` set: finished
    rungs and all variants of the study's own task (task None), or the fine-tuned models of a
    second task and the rungs' zero-shot scores on it (see the module docstring)."""
    if task is not None:
        return _finetune_models(summary, task)
    own = (summary.get("study") or {}).get("task")
    out = []
    for r in summary.get("rungs", []):
        if r.get("status") != "done":
            continue
        m = dict(r)
        m.update(kind="rung", name=f"r{r['rung']}", bytes=r.get("checkpoint_bytes"), task=own)
        out.append(m)
    for v in summary.get("variants", []):
        m = dict(v)
        m.update(kind="variant", task=own)
        out.append(m)
    return out


def _finetune_models(summary: Mapping[str, Any], task: str) -> list[dict]:
    fts = [f for f in summary.get("finetunes") or []
           if f.get("task") == task and f.get("status") == "done"]
    if not fts:
        known = ", ".join(finetune_tasks(summary)) or "none"
        raise UserError(f"the study has no fine-tuned models on task {task!r} (fine-tuned "
                        f"tasks: {known})")
    rungs = {r["rung"]: r for r in summary.get("rungs", []) if r.get("status") == "done"}
    out = []
    zero_shot: dict[int, dict] = {}
    for f in fts:
        slug = (f.get("settings") or {}).get("slug") or f.get("method")
        m = dict(f)
        m.update(kind="variant", method=f"finetune-{slug}", bytes=f.get("full_bytes"),
                 adapter_bytes=f.get("bytes"), task=task)
        out.append(m)
        if not (f.get("settings") or {}).get("new_head"):
            zero_shot.setdefault(f["of_rung"], f)
    for rung, f in sorted(zero_shot.items()):
        r = rungs.get(rung)
        if r is None:
            continue
        m = dict(r)
        m.update(kind="rung", name=f"r{rung}", bytes=r.get("checkpoint_bytes"), task=task,
                 val_loss=f.get("zero_shot_loss"), method="zero-shot")
        out.append(m)
    return out


def metric(model: Mapping[str, Any], key: str, batch: str) -> float | None:
    if key == "latency":
        lat = model.get("latency_ms") or {}
        value = lat.get(str(batch))
        if isinstance(value, Mapping):  # a store row rather than a summary entry
            value = value.get("median")
        return finite(value)
    return finite(model.get(key))


def _point(model: Mapping[str, Any], batch: str) -> tuple[float, float, float] | None:
    values = tuple(metric(model, k, batch) for k in METRICS)
    return None if any(v is None for v in values) else values  # type: ignore[return-value]


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True))


def pareto_front(items: list[dict], batch: str = "1") -> list[dict]:
    """The models no other model dominates on (loss, latency at `batch`, bytes), by loss."""
    pts = [(m, _point(m, batch)) for m in items]
    pts = [(m, p) for m, p in pts if p is not None]
    front = [m for m, p in pts if not any(dominates(q, p) for _, q in pts if q is not p)]
    return sorted(front, key=lambda m: (m["val_loss"], m["name"]))


def _order(m: dict, batch: str) -> tuple:
    loss, lat, nbytes = _point(m, batch)  # type: ignore[misc]
    return (round(loss / LOSS_TIE), nbytes, lat, m["name"])


def _fmt_value(key: str, v: float) -> str:
    if key == "bytes":
        return f"{v:,.0f} bytes"
    if key == "latency":
        return f"{v:.3g} ms"
    return f"{v:.4f} nats"


def recommend(summary: Mapping[str, Any], max_latency_ms: float | None = None,
              max_bytes: float | None = None, max_loss: float | None = None,
              batch: int | str = 1, task: str | None = None) -> dict:
    """{"choice": model or None, "closest": model or None, "reason": str, "task": ..., ...};
    `task` picks the plane (see the module docstring): None, the study's own task."""
    batch = str(batch)
    limits = {k: v for k, v in (("latency", max_latency_ms), ("bytes", max_bytes),
                                ("val_loss", max_loss)) if v is not None}
    for key, value in limits.items():
        if not (finite(value) is not None and value > 0):
            raise UserError(f"the {CONSTRAINT_LABEL[key]} limit must be a positive number, "
                            f"got {value}")
    items = models(summary, task)
    if not items:
        raise UserError("the study has no trained rungs or variants to choose from")
    measured = sorted({b for m in items for b in (m.get("latency_ms") or {})}, key=int)
    if batch not in measured:
        raise UserError(f"no latency was measured at batch {batch} in this study "
                        f"(measured batches: {', '.join(measured) or 'none'})")
    usable = [m for m in items if _point(m, batch) is not None]
    skipped = [m["name"] for m in items if _point(m, batch) is None]
    front = pareto_front(usable, batch)
    front_names = {m["name"] for m in front}
    for m in usable:
        m["on_frontier"] = m["name"] in front_names
        m["latency_flagged"] = latency.flagged(m, batch)
    unstable = sorted(m["name"] for m in usable if m["latency_flagged"])

    def violation(m: dict) -> float:
        return sum(max(0.0, metric(m, k, batch) / lim - 1.0) for k, lim in limits.items())

    feasible = [m for m in usable if violation(m) == 0.0]
    where = f"at batch {batch}"
    wanted = " and ".join(f"{CONSTRAINT_LABEL[k]} <= {_fmt_value(k, v)}"
                          for k, v in limits.items()) or "no constraints"
    result: dict[str, Any] = {
        "choice": None, "closest": None, "reason": "", "batch": int(batch),
        "constraints": {"max_latency_ms": max_latency_ms, "max_bytes": max_bytes,
                        "max_loss": max_loss},
        "frontier": [m["name"] for m in front], "considered": len(usable), "skipped": skipped,
        "feasible": sorted(m["name"] for m in feasible),
        "task": task if task is not None else (summary.get("study") or {}).get("task"),
        "unstable": unstable,
    }
    if feasible:
        best = min(feasible, key=lambda m: _order(m, batch))
        loss, lat, nbytes = _point(best, batch)  # type: ignore[misc]
        result["choice"] = best
        result["reason"] = (
            f"{best['name']} has the lowest validation loss ({loss:.4f} nats) of the "
            f"{len(feasible)} of {len(usable)} models meeting {wanted} (latency {lat:.3g} ms "
            f"{where}, {nbytes:,.0f} bytes)") + _unstable_note(best, unstable, batch)
        return result
    closest = min(usable, key=lambda m: (violation(m), metric(m, "val_loss", batch), m["name"]))
    misses = []
    for key, lim in limits.items():
        v = metric(closest, key, batch)
        if v > lim:
            misses.append(f"{CONSTRAINT_LABEL[key]} {_fmt_value(key, v)} is "
                          f"{100 * (v / lim - 1):.0f}% over the limit {_fmt_value(key, lim)}")
    result["closest"] = closest
    result["reason"] = (f"none of the {len(usable)} models meets {wanted} ({where}); closest is "
                        f"{closest['name']}: " + "; ".join(misses)
                        + _unstable_note(closest, unstable, batch))
    return result


def _unstable_note(pick: Mapping[str, Any], unstable: list[str], batch: str) -> str:
    """The reason's clause naming flagged latencies: the pick's own first, then the others."""
    if not unstable:
        return ""
    what = (f"its timed calls spread: IQR over {latency.UNSTABLE_IQR:.0%} of the median; judged "
            "on the median as measured, re-measure on a quiet machine")
    others = [n for n in unstable if n != pick["name"]]
    note = ""
    if pick["name"] in unstable:
        note += f". {pick['name']}'s latency at batch {batch} is flagged UNSTABLE ({what})"
    if others:
        note += (f". Latency at batch {batch} flagged unstable for: {', '.join(others)}"
                 + ("" if pick["name"] in unstable else f" ({what})"))
    return note
