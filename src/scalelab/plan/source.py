"""Where a plan's truth comes from: a study (its law, seed noise, sizes, cost and spec), or a
prior law (a fit.json, or a study's law) with an assumed noise and a preset's spec."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.plan.search import CostModel, measured_cost, six_nd
from scalelab.plan.simulation import NoiseModel, assumed_noise, measured_noise

if TYPE_CHECKING:
    from scalelab.models.base import Family
    from scalelab.tasks.base import Task


@dataclass
class Source:
    """What a plan starts from: the noise model, the cost model, the base spec (a dict as a
    YAML spec writes it), the sizes measured (empty for a prior) and where it came from."""

    noise: NoiseModel
    cost: CostModel
    spec: dict[str, Any]
    measured: list[float]
    name: str


def _summary(path: Path) -> dict[str, Any]:
    file = path / "summary.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: not a study folder or a fit.json (no readable "
                        f"{file.name})") from None


def law_record(data: dict[str, Any], where: Path) -> dict[str, Any]:
    """The val_loss law of a summary.json, or a fit.json record itself."""
    if "fits" in data:
        for fit in data.get("fits") or []:
            if fit.get("y") == "val_loss" and (fit.get("params") or {}).get("alpha") is not None:
                return fit
        raise UserError(f"{where}: the study has no fitted law of val_loss to plan from")
    if "params" not in data:
        raise UserError(f"{where}: not a study folder or a fit.json (no fitted law)")
    return data


# The parameters a law written out on the command line names: a power law in N, or the
# chinchilla form in N and D (a published fit, e.g. Hoffmann et al.'s E, A, B, alpha, beta).
INLINE_FORMS = {frozenset({"E", "A", "alpha"}): "power",
                frozenset({"E", "A", "B", "alpha", "beta"}): "chinchilla"}


def prior_record(law: str | Path) -> dict[str, Any]:
    """A prior law's fit record (`--law`): a fit.json, a study folder's law, or the law's
    parameters written out, `E=1.69,A=406.4,alpha=0.34` (a published law: the power law in N;
    with B and beta, the chinchilla form in N and D)."""
    text = str(law)
    if "=" in text and not Path(text).exists():
        return _inline_law(text)
    path = Path(law)
    return law_record(_summary(path), path)


def _inline_law(text: str) -> dict[str, Any]:
    params: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"--law {text}: {part.strip()!r} is not NAME=NUMBER (write the law "
                            "as E=1.69,A=406.4,alpha=0.34)") from None
    form = INLINE_FORMS.get(frozenset(params))
    if form is None:
        raise UserError(f"--law {text}: name E, A and alpha (a power law in N) or E, A, B, "
                        "alpha and beta (a law in N and D), each once")
    if params["E"] < 0 or any(v <= 0 for k, v in params.items() if k != "E"):
        raise UserError(f"--law {text}: E must be 0 or more and the others above 0")
    x = "n_nonembed" if form == "power" else ["n_nonembed", "D"]
    return {"law": form, "params": params, "x": x, "y": "val_loss"}


def _d_rule(spec: dict[str, Any]) -> Callable[[float], float]:
    from scalelab.spec import parse_spec

    train = parse_spec(spec).train
    if train.tokens is None and train.tokens_per_param is None:
        raise UserError("the base spec sets no train.tokens: a plan needs its D rule")
    return train.budget


def from_study(path: str | Path, noise: float | None = None) -> Source:
    """A study folder: its law, its seed noise (or `noise`, assumed), its rungs' measured
    FLOPs and rate, and its stored spec."""
    path = Path(path)
    return study_source(_summary(path), path, noise)


def study_source(data: dict[str, Any], path: Path, noise: float | None = None) -> Source:
    """`from_study` of a study's summary (summary.json's content, or `build_summary`'s)."""
    if "rungs" not in data:
        raise UserError(f"{path}: not a study folder (its summary has no rungs)")
    law = Law.from_summary(law_record(data, path))
    done = [r for r in data["rungs"] if r.get("status") == "done" and r.get("val_loss")]
    spec = dict((data.get("study") or {}).get("spec") or {})
    d_rule = _d_rule(spec)
    model = (assumed_noise(law, noise) if noise is not None else
             measured_noise(law, [r["n_nonembed"] for r in done], [r["val_loss"] for r in done]))
    return Source(model, measured_cost(done, d_rule), spec,
                  sorted({float(r["n_nonembed"]) for r in done}), str(path))


def from_prior(law_path: str | Path, noise: float, preset: str = "default") -> Source:
    """A prior law (`prior_record`: a fit.json, a study folder's law, or its parameters written
    out), `noise` assumed for every run, the preset's spec and its D rule; cost 6·N·D."""
    from scalelab.spec import preset_spec

    law = Law.from_summary(prior_record(law_path))
    spec = preset_spec(preset).model_dump(mode="json", exclude_none=True)
    return Source(assumed_noise(law, noise), six_nd(_d_rule(spec)), spec, [], str(law_path))


def shape_realizer(spec: dict[str, Any]) -> Callable[[float], float]:
    """Target size -> the non-embedding N of the shape the spec's family builds for it (the
    sizes a study of this spec would train), cached."""
    from scalelab.spec import parse_spec
    from scalelab.study import resolve

    res = resolve(parse_spec(spec))
    return realizer(res.family, res.task)


def realizer(family: Family, task: Task) -> Callable[[float], float]:
    """`shape_realizer` of a family and task already built (a user's own objects)."""
    from scalelab.ladder import _sized

    cache: dict[float, float] = {}

    def realize(n: float) -> float:
        if n not in cache:
            cache[n] = float(_sized(family, task, n, "plan")[2])
        return cache[n]

    return realize
