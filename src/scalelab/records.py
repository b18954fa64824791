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

    Two-axis ladders (None or the N-only values otherwise):
    budget: the IsoFLOP budget C in FLOPs the rung belongs to (None on a grid or N-only ladder).
    schedule: "cosine" or "wsd"; decay_steps: wsd's decay span (the last steps of the rung).
    train_units: units of D in the task's training split (None where the task does not say),
    so epochs = D / train_units.
    trunk, branch_step: a wsd cool-down branch is rung `trunk`'s state at `branch_step` (still
    in its stable phase), decayed over this rung's own decay_steps; None for a rung trained
    from step 0 (cosine rungs, and the longest wsd run of each size, the trunk itself).
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
    budget: float | None = None
    schedule: str = "cosine"
    decay_steps: int = 0
    train_units: int | None = None
    trunk: int | None = None
    branch_step: int | None = None
    # The seed of the batch stream; None: `seed`, so each rung reads its own stream. A ladder
    # with `train.shared_data_order` gives every size of a repeat the same stream.
    data_seed: int | None = None

    @property
    def batch_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def epochs(self) -> float | None:
        """Passes over the training split that D makes (> 1: repeated data)."""
        return self.D / self.train_units if self.train_units else None

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
    mfu: float | None = None  # against the measured GEMM peak (the study's gemm_peak_flops)
    energy_j: float | None = None  # the device's energy over the rung's training (NVML), if any
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


# -- fits and their holdout checks ----------------------------------------------------------------

HOLDOUT_SIZE_RTOL = 0.01  # sizes within 1% count as one (as laws.validate.size_groups)


def _size(x: Any) -> float | None:
    """The size of a point: x itself, or the first input of a law in several (N of N, D)."""
    if isinstance(x, list | tuple):
        x = x[0] if x else None
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _opt_float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


@dataclass
class Holdout:
    """How well a law predicts runs it was not fitted to: one shape for every rule.

    rule: "largest:K", "smallest:K", "below:V" (fit on the smaller sizes, predict the others) or
    "loso" (leave one size out: every size predicted from a fit to all the others).
    n_fit: runs the law was fitted to (None for loso, where it changes per fold, and for records
    read back from studies that did not store it); n_test: runs predicted.
    max_fit_size: the largest size fitted on (None for loso and old records).
    points: every predicted run, {x, measured, predicted, lo, hi, rel_error}: x is the size (a
    list for laws of several inputs, None in old records that did not store it), lo/hi the
    prediction interval (None without a bootstrap), rel_error = (predicted - measured) / measured.
    folds: loso only, one {size, n_test, mean_rel_error, mean_abs_rel_error} per size.
    mean_rel_error, mean_abs_rel_error: over the points (loso: over the folds, so every size
    counts once).
    params, on_bound: the law fitted to the kept runs (None for loso).
    """

    rule: str
    n_fit: int | None
    n_test: int
    max_fit_size: float | None
    points: list[dict[str, Any]]
    folds: list[dict[str, Any]] | None = None
    mean_rel_error: float | None = None
    mean_abs_rel_error: float | None = None
    params: dict[str, float] | None = None
    on_bound: list[str] | None = None

    def __post_init__(self) -> None:
        rel = [p["rel_error"] for p in self.points if _opt_float(p.get("rel_error")) is not None]
        if self.mean_rel_error is None and rel:
            self.mean_rel_error = sum(rel) / len(rel)
        if self.mean_abs_rel_error is None and rel:
            self.mean_abs_rel_error = sum(abs(r) for r in rel) / len(rel)

    def to_dict(self) -> dict[str, Any]:
        """The record, plus the largest size's prediction at the top level (x, predicted,
        measured, rel_error, interval) for every rule: the keys summary.json's holdout has always
        had, so scripts written against them keep working."""
        out = asdict(self)
        top = self.largest() or {}
        lo, hi = top.get("lo"), top.get("hi")
        out.update(x=top.get("x"), predicted=top.get("predicted"), measured=top.get("measured"),
                   rel_error=top.get("rel_error"),
                   interval=None if lo is None or hi is None else [lo, hi])
        return out

    def largest(self) -> dict[str, Any] | None:
        """The prediction of the largest size: {x, measured, predicted, lo, hi, rel_error}.

        Several runs of that size (seeds, folds) are averaged (measured, predicted, lo, hi) and
        the relative error is that of the means. None when no point was predicted."""
        pts = [p for p in self.points if _opt_float(p.get("predicted")) is not None]
        if not pts:
            return None
        sizes = [_size(p.get("x")) for p in pts]
        known = [s for s in sizes if s is not None]
        if known:
            top = max(known)
            pts = [p for p, s in zip(pts, sizes, strict=True)
                   if s is not None and s * (1 + HOLDOUT_SIZE_RTOL) >= top]
        if len(pts) == 1:
            return dict(pts[0])

        def mean(key: str) -> float | None:
            vals = [_opt_float(p.get(key)) for p in pts]
            return None if any(v is None for v in vals) else sum(vals) / len(vals)

        predicted, measured = mean("predicted"), mean("measured")
        rel = (predicted - measured) / measured if measured else None
        return {"x": pts[0].get("x"), "measured": measured, "predicted": predicted,
                "lo": mean("lo"), "hi": mean("hi"), "rel_error": rel}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Holdout:
        """A holdout record back from JSON, in this shape or in an older one.

        The one adapter for old records: the study fits of schema-1 databases stored
        {x, predicted, measured, rel_error, interval | lo, hi} (the largest rung, fitted on all
        the others); `scalelab fit` wrote loso as {rule, n_folds, n_test, folds, means}."""
        if "points" not in data and "predicted" in data:  # the old study record
            interval = data.get("interval")
            lo, hi = data.get("lo"), data.get("hi")
            if isinstance(interval, list | tuple) and len(interval) == 2:
                lo, hi = interval
            predicted = _opt_float(data.get("predicted"))
            measured = _opt_float(data.get("measured"))
            rel = _opt_float(data.get("rel_error"))
            if rel is None and predicted is not None and measured:
                rel = (predicted - measured) / measured
            point = {"x": data.get("x"), "measured": measured, "predicted": predicted,
                     "lo": _opt_float(lo), "hi": _opt_float(hi), "rel_error": rel}
            return cls(rule="largest:1", n_fit=None, n_test=1, max_fit_size=None, points=[point],
                       mean_rel_error=rel, mean_abs_rel_error=None if rel is None else abs(rel))
        points = [{"x": p.get("x"), "measured": p.get("measured"), "predicted": p.get("predicted"),
                   "lo": p.get("lo"), "hi": p.get("hi"), "rel_error": p.get("rel_error")}
                  for p in data.get("points") or []]
        return cls(rule=str(data.get("rule") or "largest:1"), n_fit=data.get("n_fit"),
                   n_test=int(data.get("n_test") or len(points)),
                   max_fit_size=_opt_float(data.get("max_fit_size")), points=points,
                   folds=data.get("folds"), mean_rel_error=_opt_float(data.get("mean_rel_error")),
                   mean_abs_rel_error=_opt_float(data.get("mean_abs_rel_error")),
                   params=data.get("params"), on_bound=data.get("on_bound"))


@dataclass
class FitRecord:
    """A study's fitted law as summary.json and study.db keep it (`fits`, one per quantity).

    law: the form ("power"); x: the input ("n_nonembed"); y: what was fitted ("val_loss", or
    "val_error" for classifiers); params {name: value | None}; intervals {name: [lo, hi] | None}
    at `level`; on_bound: parameters that ended on a bound of the fit; holdout: the law's own
    extrapolation check (None when the ladder is too short); band {x, point, lo, hi, level} over
    the ladder's range and bootstrap_params {name: [samples]} when bootstrapped, else None.

    Added with the extrapolation profile (None or empty in records of older studies):
    dof: distinct sizes less the law's parameters (seed repeats of a size are one size; -1 for
    the two-size law, whose E is pinned at 0); flags: "zero_dof" when dof <= 0, an exact fit
    through its points that is no result (the report says so and shows no exponent); noise:
    the noise model, `scalelab.laws.noise` (the spread across seeds per size, or the
    residuals'); profile: the extrapolation profile and its trust horizon,
    `scalelab.laws.profile`; predictions: [{factor, x, predicted, lo, hi, level,
    beyond_horizon, warning}] for models 10x and 100x the largest rung.
    """

    law: str
    x: str | list[str]
    y: str
    params: dict[str, float | None]
    intervals: dict[str, list[float] | None]
    level: float = 0.95
    on_bound: list[str] = field(default_factory=list)
    holdout: Holdout | None = None
    band: dict[str, Any] | None = None
    bootstrap_params: dict[str, list[float]] | None = None
    dof: int | None = None
    flags: list[str] = field(default_factory=list)
    noise: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    predictions: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["holdout"] = None if self.holdout is None else self.holdout.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitRecord:
        """A fit record back from JSON; records of older studies (no `y`, `level` or `band`, the
        old holdout shape) read as the loss law they were."""
        ho = data.get("holdout")
        band = data.get("band")
        level = data.get("level") or (band or {}).get("level") or 0.95
        return cls(law=str(data.get("law") or "power"), x=data.get("x") or "n_nonembed",
                   y=str(data.get("y") or "val_loss"), params=dict(data.get("params") or {}),
                   intervals=dict(data.get("intervals") or {}), level=float(level),
                   on_bound=[str(p) for p in data.get("on_bound") or []],
                   holdout=Holdout.from_dict(ho) if isinstance(ho, dict) else None,
                   band=band, bootstrap_params=data.get("bootstrap_params"),
                   dof=data.get("dof"), flags=[str(f) for f in data.get("flags") or []],
                   noise=data.get("noise"), profile=data.get("profile"),
                   predictions=data.get("predictions"))
