"""Whether a study still trains the models it planned.

A study records, for every rung, the shape its family chose and the parameter counts of the
model built from it (the N its law is fitted on), and for the study the fingerprint of the code
that builds its models (`models.base.family_fingerprint`: for a custom family its factory and a
hash of the factory's module). The spec comparison of a resume cannot see a factory that was
edited, so a resume also checks (`check_resume`):

- every stored rung's shape, built by the family as it is now, still has the stored counts;
- every rung the ladder plans now has the counts stored for it;
- the fingerprint is the stored one (a study made before fingerprints records it then).

A mismatch is one UserError line and nothing recorded changes. `scalelab run --replan` (the
`replan` argument) re-plans instead: every unfinished rung (pending, running or failed) is
forgotten with its curve and resume points and planned again from the current model; it still
refuses when a finished rung (done or diverged) was made by another model, since a law over two
models is wrong and finished measurements are not thrown away: that study needs a new --out.

Before each rung trains, `check_built` compares the model it is about to build with its plan
(a worker on another machine may import another version of a factory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from scalelab.errors import UserError
from scalelab.models.base import Family, built_counts, family_fingerprint
from scalelab.records import FINISHED, RungPlan
from scalelab.storage import StudyStore

CHANGED = "the model changed"
ADVICE = f"{CHANGED}; use a new --out or --replan"


@dataclass(frozen=True)
class Change:
    """A rung whose model is not the one the study planned, in words."""

    rung: int
    status: str
    text: str


def _who(family: Family, shape: dict) -> str:
    builder = getattr(family, "builder", None)
    return builder(shape) if callable(builder) else f"family {family.name!r} at {shape}"


def _counts_text(now: tuple[int, int], planned: tuple[int, int]) -> str:
    """"811 parameters; this study planned 306" (non-embedding ones where only they differ)."""
    if now[0] != planned[0]:
        return f"{now[0]:,} parameters; this study planned {planned[0]:,}"
    return f"{now[1]:,} non-embedding parameters; this study planned {planned[1]:,}"


def built_change(family: Family, shape: dict, planned: tuple[int, int]) -> str | None:
    """What differs between the model `family` builds for `shape` now and the planned counts
    (n_params, n_nonembed), or None when they agree."""
    try:
        now = built_counts(family, shape)
    except Exception as err:  # a factory that no longer builds this shape, say
        return f"{_who(family, shape)} no longer builds: {type(err).__name__}: " \
               f"{' '.join(str(err).split())}"
    if tuple(now) == tuple(planned):
        return None
    return f"{_who(family, shape)} now builds {_counts_text(now, planned)}"


def check_built(family: Family, plan: RungPlan) -> None:
    """Before a rung trains: the model its shape builds has the planned counts."""
    change = built_change(family, plan.shape, (plan.n_params, plan.n_nonembed))
    if change is not None:
        raise UserError(f"rung {plan.rung}: {change}: {ADVICE}")


def model_changes(family: Family, rungs: list[dict], plans: list[RungPlan]) -> list[Change]:
    """The stored rungs (store rows) whose model differs from what the study planned: their
    shape builds other counts now, or the ladder now plans other counts for them."""
    fresh = {p.rung: p for p in plans}
    seen: dict[str, tuple[int, int] | str | None] = {}
    out = []
    for r in rungs:
        planned = (r["n_params"], r["n_nonembed"])
        key = json.dumps([r["shape"], planned], sort_keys=True)
        if key not in seen:  # seed repeats and folds share a shape: built once
            seen[key] = built_change(family, r["shape"], planned)
        text = seen[key]
        plan = fresh.get(r["rung"])
        if text is None and plan is not None and (plan.n_params, plan.n_nonembed) != planned:
            text = (f"the ladder now plans rung {r['rung']} as {plan.describe or plan.shape} "
                    f"with {_counts_text((plan.n_params, plan.n_nonembed), planned)}")
        if text is not None:
            out.append(Change(r["rung"], r["status"], str(text)))
    return out


def _fingerprint_change(stored: dict | None, current: dict) -> str | None:
    if stored is None or stored == current:
        return None
    keys = sorted(k for k in {*stored, *current} if stored.get(k) != current.get(k))
    what = ", ".join(f"{k} {stored.get(k)!r} -> {current.get(k)!r}" for k in keys)
    return f"the code that builds this study's models changed since it was planned ({what})"


def check_resume(store: StudyStore, family: Family, plans: list[RungPlan],
                 replan: bool = False) -> list[int]:
    """Check a study's stored rungs against the model the family builds now (see the module
    docstring). Returns the rungs `replan` forgot (their resume points are the caller's to
    remove); raises UserError, having written nothing, when the model changed and `replan` is
    off, or when a finished rung was made by another model."""
    study = store.study() or {}
    current = family_fingerprint(family)
    rungs = store.rungs()
    changes = model_changes(family, rungs, plans)
    code = _fingerprint_change(study.get("model"), current)
    if not changes and code is None:
        if study.get("model") is None:  # a new study, or one made before fingerprints
            store.set_model(current)
        return []
    first = f"rung {changes[0].rung}: {changes[0].text}" if changes else code
    n_more = len(changes) - 1
    more = f" ({n_more} more rung{'s' if n_more > 1 else ''} too)" if n_more else ""
    if not replan:
        raise UserError(f"{first}: {CHANGED}{more}; use a new --out or --replan")
    done = [c for c in changes if c.status in FINISHED]
    if code is not None and not done:
        done = [Change(r["rung"], r["status"], code) for r in rungs if r["status"] in FINISHED]
    if done:
        raise UserError(f"--replan re-plans only unfinished rungs, but rung {done[0].rung} "
                        f"finished with another model ({done[0].text}); a law over two models "
                        "would be wrong: use a new --out")
    dropped = sorted({r["rung"] for r in rungs if r["status"] not in FINISHED}
                     if code is not None else {c.rung for c in changes})
    store.drop_rungs(dropped)
    store.set_model(current)
    return dropped
