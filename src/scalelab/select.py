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

When nothing meets the constraints, `closest` is the model with the smallest total normalised
violation, sum over constraints of max(0, value / limit - 1) (so 10% over a latency budget weighs
the same as 10% over a size budget); ties are broken by lower loss, then name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalelab.errors import UserError
from scalelab.values import finite

LOSS_TIE = 1e-4
METRICS = ("val_loss", "latency", "bytes")
CONSTRAINT_LABEL = {"val_loss": "loss", "latency": "latency", "bytes": "bytes"}


def models(summary: Mapping[str, Any]) -> list[dict]:
    """Finished rungs and all variants of a summary, with `kind`, `name` and `bytes` set."""
    out = []
    for r in summary.get("rungs", []):
        if r.get("status") != "done":
            continue
        m = dict(r)
        m.update(kind="rung", name=f"r{r['rung']}", bytes=r.get("checkpoint_bytes"))
        out.append(m)
    for v in summary.get("variants", []):
        m = dict(v)
        m["kind"] = "variant"
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
              batch: int | str = 1) -> dict:
    """{"choice": model or None, "closest": model or None, "reason": str, ...}."""
    batch = str(batch)
    limits = {k: v for k, v in (("latency", max_latency_ms), ("bytes", max_bytes),
                                ("val_loss", max_loss)) if v is not None}
    for key, value in limits.items():
        if not (finite(value) is not None and value > 0):
            raise UserError(f"the {CONSTRAINT_LABEL[key]} limit must be a positive number, "
                            f"got {value}")
    items = models(summary)
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
    }
    if feasible:
        best = min(feasible, key=lambda m: _order(m, batch))
        loss, lat, nbytes = _point(best, batch)  # type: ignore[misc]
        result["choice"] = best
        result["reason"] = (
            f"{best['name']} has the lowest validation loss ({loss:.4f} nats) of the "
            f"{len(feasible)} of {len(usable)} models meeting {wanted} (latency {lat:.3g} ms "
            f"{where}, {nbytes:,.0f} bytes)")
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
                        f"{closest['name']}: " + "; ".join(misses))
    return result
