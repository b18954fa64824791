"""StudySpec: the single description of a study (pydantic), read from YAML or taken from defaults.

Unknown keys are errors (a typo must not silently fall back to a default). `load_spec` turns every
problem with a file into a `UserError` whose message names the key and what is wrong.
"""

from __future__ import annotations

import glob
import os
from enum import StrEnum
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from scalelab.errors import UserError


class Device(StrEnum):
    """Where a study trains: auto = CUDA when present, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    """Matmul precision (`tasks.base.uses_bf16`): auto = bf16 autocast on CUDA, fp32 on CPU."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


class Schedule(StrEnum):
    COSINE = "cosine"
    WSD = "wsd"


class DecayShape(StrEnum):
    ONE_MINUS_SQRT = "1-sqrt"
    LINEAR = "linear"


# The choices above are StrEnums: pydantic checks them, Typer shows them, and each member is
# its own string (`Precision.BF16 == "bf16"`, JSON "bf16"), so a stored spec reads back equal.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Named(BaseModel):
    """A task or family: its registry name plus that task's or family's own options (any other
    keys). The options are checked by the task or family itself (`parse_options`) when the study
    resolves the spec, before anything runs or is written."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)

    @property
    def options(self) -> dict:
        return dict(self.model_extra or {})


class TaskSpec(_Named):
    name: str = "pycode"


class FamilySpec(_Named):
    name: str = "gpt"


class IsoFlopSpec(_Strict):
    """IsoFLOP budgets: for each compute budget C (FLOPs, increasing), `points` sizes spaced
    evenly in log N around a first guess of the optimum, each trained on D = C / (its measured
    FLOPs per unit of D).

    The guess: C = 6·N·D with D = `tokens_per_param`·N (Chinchilla's 20), so N0 = sqrt(C / (6 ·
    tokens_per_param)). The sizes lie on one log grid shared by every budget, of ratio
    r = span^(2 / (points - 1)): the `points` grid sizes nearest N0, centred on it, so they cover
    about N0/span .. N0·span, and a size on the grid recurs across budgets (with a WSD schedule
    its budgets become cool-down branches of one run)."""

    budgets: list[float]
    points: int = 5
    span: float = Field(4.0, gt=1, description="sizes reach about N0/span .. N0*span")
    tokens_per_param: float = Field(20.0, gt=0, description="D/N of the first guess of N0")

    @model_validator(mode="after")
    def _check(self) -> IsoFlopSpec:
        if len(self.budgets) < 1:
            raise ValueError("budgets must not be empty")
        if any(c <= 0 for c in self.budgets):
            raise ValueError("budgets must be positive FLOP counts")
        if any(b <= a for a, b in zip(self.budgets, self.budgets[1:], strict=False)):
            raise ValueError(f"budgets must be increasing, got {self.budgets}")
        if self.points < 3:
            raise ValueError(f"points is {self.points}; a parabola in log N needs 3 or more "
                             "points per budget")
        return self


class LadderSpec(_Strict):
    """Rung sizes in non-embedding parameters: explicit `sizes`, or `n_rungs` spaced geometrically
    from `min_nonembed` to `max_nonembed`.

    Two axes (N and D), one of:
    - a grid: those sizes times `tokens` (D values in the task's unit) or `tokens_per_param`
      (D = ratio × n_nonembed), one rung per (N, D);
    - `isoflop`: compute budgets, each with its own sizes (IsoFlopSpec).
    Without either, every rung's D follows `train` (an N-only ladder).

    `repeats`: train each size this many times, each from its own seed (the seed repeats give
    the noise model of the fit); with `repeats_below`, only the sizes whose target N is below
    that value repeat (small rungs are cheap), the others run once. Not with a k-fold task,
    whose folds already are the repeats of each size."""

    sizes: list[float] | None = None
    n_rungs: int = Field(6, ge=1, le=64)
    min_nonembed: float = Field(1e4, gt=0)
    max_nonembed: float = Field(1e6, gt=0)
    repeats: int = Field(1, ge=1, le=32)
    repeats_below: float | None = Field(None, gt=0)
    tokens: list[float] | None = None
    tokens_per_param: list[float] | None = None
    isoflop: IsoFlopSpec | None = None

    @property
    def two_axis(self) -> bool:
        """Whether the ladder varies D as well as N (a grid or IsoFLOP budgets)."""
        return self.tokens is not None or self.tokens_per_param is not None \
            or self.isoflop is not None

    def targets(self) -> list[float]:
        """The target sizes, ascending."""
        if self.sizes is not None:
            return sorted(float(s) for s in self.sizes)
        if self.n_rungs == 1:
            return [float(self.max_nonembed)]
        return [float(s) for s in
                np.geomspace(self.min_nonembed, self.max_nonembed, self.n_rungs)]

    @model_validator(mode="after")
    def _check(self) -> LadderSpec:
        if self.repeats_below is not None and self.repeats < 2:
            raise ValueError("repeats_below needs repeats of 2 or more")
        if self.sizes is not None:
            if not self.sizes:
                raise ValueError("sizes must not be empty")
            if any(s <= 0 for s in self.sizes):
                raise ValueError("sizes must be positive")
        elif self.max_nonembed < self.min_nonembed:
            raise ValueError("max_nonembed must be at least min_nonembed")
        self._check_two_axis()
        return self

    def _check_two_axis(self) -> None:
        """A two-axis ladder must be able to separate N from D: two or more of each."""
        if self.tokens is not None and self.tokens_per_param is not None:
            raise ValueError("tokens and tokens_per_param are two ways to give D; give one")
        # Compared with the defaults, not `model_fields_set`: a stored spec (every field
        # written out) must read back the same on resume.
        fields = type(self).model_fields
        given = {k for k in ("sizes", "n_rungs", "min_nonembed", "max_nonembed", "tokens",
                             "tokens_per_param") if getattr(self, k) != fields[k].default}
        if self.isoflop is not None and given:
            raise ValueError("isoflop chooses its own sizes and D; drop "
                             f"{', '.join(sorted(given))}")
        for key in ("tokens", "tokens_per_param"):
            values = getattr(self, key)
            if values is None:
                continue
            if any(v <= 0 for v in values):
                raise ValueError(f"{key} must be positive")
            if len(set(values)) < 2:
                raise ValueError(f"{key}: a two-axis law needs 2 or more D values, got "
                                 f"{values} (for one D per rung use train.tokens)")
            if len(self.targets()) < 2:
                raise ValueError("a two-axis grid needs 2 or more sizes (ladder.sizes)")


OLD_DIVERGE_FACTOR = 3.0  # the default of the guard diverge_rise replaced (see TrainSpec)


class TrainSpec(_Strict):
    """One rung's training. Budget D, in the task's unit (bytes or tokens for text, examples for
    tabular data and images), one of:
    - `tokens` for every rung (`tokens_exponent` 0, the default);
    - a budget that grows with size: `tokens × (n_nonembed / tokens_ref_nonembed) ^
      tokens_exponent`, so `tokens` is the budget of a rung of `tokens_ref_nonembed`;
    - `tokens_per_param × n_nonembed` (D ∝ N). The learning rate follows
    `lr × (n_nonembed / lr_ref_nonembed) ^ lr_exponent` (lr ∝ N^-1/3 by default), with linear
    warm-up then cosine decay to `min_lr_frac × lr` over each rung's own number of steps.

    Left out, `tokens` and `lr` are chosen for the task when the study resolves its spec
    (`ladder.resolve_train`), and the spec is stored with the values chosen: a task that knows
    its training rows (a table, digits) gets a number of epochs decided from its size, text 4M
    units; a language model lr 3e-3, a model of vectors or images 1e-3."""

    tokens: int | None = Field(None, gt=0)
    tokens_exponent: float = Field(0.0, ge=0, le=2)
    tokens_ref_nonembed: float = Field(1e6, gt=0)
    tokens_per_param: float | None = Field(None, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float | None = Field(None, gt=0)
    lr_ref_nonembed: float = Field(1e5, gt=0)
    lr_exponent: float = Field(-1.0 / 3.0, le=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1)
    min_lr_frac: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(250, gt=0, description="optimizer steps between validation checks")
    eval_tokens: int = Field(16_384, gt=0, description="validation tokens per periodic check")
    final_eval_tokens: int = Field(262_144, gt=0, description="validation tokens of the final loss")
    checkpoint_every: int = Field(500, gt=0, description="optimizer steps between checkpoints")
    diverge_rise: float = Field(
        0.5, gt=0, le=1, description="diverged when two intervals in a row have a mean "
        "training loss above the best before them by more than this share of its fall from the "
        "first interval's (1: back to where it started) and by more than 4x its noise, or one "
        "is back above the first interval's by more than 4x its noise (train/diverge.py)")
    seed: int = 0
    shared_data_order: bool = Field(
        False, description="every size reads the same batches in the same order (repeat r: "
                           "stream seed + r), so differences between sizes are the models'")
    precision: Precision = Field(
        Precision.AUTO, description="matmul precision: auto = bf16 autocast on CUDA, fp32 on CPU")
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model: auto = on CUDA only (on CPU the compile "
                            "time was never won back; docs/results.md, 'Precision and "
                            "compilation')")
    schedule: Schedule | None = Field(
        None, description="cosine: warm-up then cosine decay, one run per rung; wsd: warm-up, "
                          "stable, decay over the last decay_frac of each D, smaller D of a "
                          "size as cool-down branches of its longest run. Default: wsd on a "
                          "two-axis ladder, cosine otherwise")
    decay_frac: float = Field(0.2, gt=0, lt=1, description="wsd: the decaying share of each D")
    decay_shape: DecayShape = Field(
        DecayShape.ONE_MINUS_SQRT,
        description="wsd: lr falls as 1 - sqrt(progress) (Hägele et al. 2024) or linearly, to "
                    "min_lr_frac × lr")

    def budget(self, n_nonembed: float) -> float:
        """A rung's budget D in the task's unit, by the rule above (`tokens` resolved)."""
        if self.tokens_per_param:
            return self.tokens_per_param * n_nonembed
        if self.tokens is None:
            raise ValueError("train.tokens is chosen for the task first (ladder.resolve_train)")
        return self.tokens * (n_nonembed / self.tokens_ref_nonembed) ** self.tokens_exponent

    @model_validator(mode="before")
    @classmethod
    def _old_guard(cls, data: object) -> object:
        """`diverge_factor` (the guard before diverge_rise: diverged above factor × the best
        loss) is in every spec stored before it was replaced; at its default 3 it meant "the
        default guard" and is dropped, any other value is refused naming the new setting."""
        if isinstance(data, dict) and "diverge_factor" in data:
            data = dict(data)
            if data.pop("diverge_factor") != OLD_DIVERGE_FACTOR:
                raise ValueError("diverge_factor is replaced by diverge_rise (the share of the "
                                 "loss's fall a climb must give back to count as divergence); "
                                 "remove diverge_factor")
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainSpec:
        if self.tokens_per_param is not None and self.tokens_exponent:
            raise ValueError("tokens_per_param and tokens_exponent are two budget rules; "
                             "give one")
        return self


class MeasureSpec(_Strict):
    latency_batches: list[int] = Field(default_factory=lambda: [1, 32])
    latency_repeats: int = Field(30, gt=2, description="timed calls per latency, at least: "
                                 "calls run back to back for 3.3 ms a repeat too, split into "
                                 "sub-series whose fastest is the latency (docs/compress.md)")
    threads: int | None = Field(None, gt=0, description="torch threads for training and "
                                "evaluation; default: all cores (CPU latency is timed on one "
                                "thread: docs/compress.md)")

    @model_validator(mode="after")
    def _check(self) -> MeasureSpec:
        if not self.latency_batches or any(b <= 0 for b in self.latency_batches):
            raise ValueError("latency_batches must be positive integers")
        return self


class FitSpec(_Strict):
    """The study's law: bootstrap resamples and seed, and the `tolerance` of its trust horizon
    (the relative error the extrapolation profile must stay within; 0.02 is 2%)."""

    bootstrap: int = Field(1000, ge=0)
    seed: int = 0
    tolerance: float = Field(0.02, gt=0, lt=1)


class CompressSpec(_Strict):
    """Compressed variants made after the ladder (see `scalelab compress --help` for methods).
    The method strings are checked by the compress stage when the study resolves its spec,
    before anything runs (spec.py imports no stage)."""

    rung: str | int = Field("largest", description="rung index, or 'largest'")
    methods: list[str] | None = Field(
        None, description="method strings such as int8, prune:0.5+ft, distill (`scalelab list "
                          "methods`); default: the default methods that apply to the study")


class ExecuteSpec(_Strict):
    """Resources of one rung when an executor places rungs on a cluster (`--executor ray`):
    CPUs and GPUs each rung's task asks for (rungs run side by side where they fit), how often a
    rung whose worker died is retried (each retry resumes from its last checkpoint), and the CPUs
    of a Ray started inside this process (no `--address`; default: every core).

    `processes`: how many processes (ranks) train each rung together, on its global batch split
    evenly between them (gloo on CPU, NCCL with one GPU per rank); `sharding` how they share the
    model: `ddp` (each holds all of it) or `fsdp` (FSDP2: parameters, gradients and optimizer
    state split across ranks)."""

    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)
    max_retries: int = Field(3, ge=0)
    local_cpus: int | None = Field(None, gt=0)
    processes: int = Field(1, ge=1)
    sharding: Literal["ddp", "fsdp"] = "ddp"


class TuneSpec(_Strict):
    """The search space of `scalelab tune`, searched per rung by Optuna's TPE: a key left out is
    not searched. `lr`: [low, high] of the peak learning rate (log-uniform); `warmup_frac`:
    [low, high] (uniform); `batch_size`: the choices. `trials` per rung (`--trials` overrides);
    `prune`: stop hopeless trials early from their validation curves (median rule)."""

    lr: list[float] | None = None
    warmup_frac: list[float] | None = None
    batch_size: list[int] | None = None
    trials: int = Field(8, ge=1, le=1000)
    prune: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TuneSpec:
        if self.lr is not None and (len(self.lr) != 2 or not 0 < self.lr[0] < self.lr[1]):
            raise ValueError("lr must be [low, high] with 0 < low < high")
        w = self.warmup_frac
        if w is not None and (len(w) != 2 or not 0 <= w[0] < w[1] < 1):
            raise ValueError("warmup_frac must be [low, high] with 0 <= low < high < 1")
        if self.batch_size is not None and (not self.batch_size
                                            or any(b <= 0 for b in self.batch_size)):
            raise ValueError("batch_size must be a list of positive integers")
        return self

    @property
    def searched(self) -> list[str]:
        return [k for k in ("lr", "warmup_frac", "batch_size") if getattr(self, k) is not None]


class StudySpec(_Strict):
    name: str = Field("default", min_length=1)
    task: TaskSpec = Field(default_factory=TaskSpec)
    family: FamilySpec = Field(default_factory=FamilySpec)
    ladder: LadderSpec = Field(default_factory=LadderSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    fit: FitSpec = Field(default_factory=FitSpec)
    compress: CompressSpec | None = None
    device: Device = Device.AUTO
    # Where rungs run (`--executor ray`) and what `scalelab tune` searches; neither changes what a
    # rung is, so a study resumes whatever they say.
    execute: ExecuteSpec = Field(default_factory=ExecuteSpec)
    tune: TuneSpec | None = None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


QUICK_RUNGS = 4  # the smallest sizes of the ladder that a quick look trains
QUICK_MAX_UNITS = 1_600_000  # the most any quick rung trains on (about 30 s for 156k on 2 cores)


def quick_spec(spec: StudySpec | None = None) -> StudySpec:
    """A first look at a spec in a minute or two (on 2 CPU cores for the default study): the
    `QUICK_RUNGS` smallest sizes of its ladder, one run each, under the spec's own budget rule
    scaled down where needed so that no rung trains on more than `QUICK_MAX_UNITS`; fewer
    evaluation windows and bootstrap resamples. Because it keeps the spec's sizes and budget
    rule, the quick study of the default study is its smaller end, and its loss falls at every
    rung as the full study's does. A spec that leaves its budget to the task keeps it (a table's
    epochs are already sized for it). A two-axis ladder keeps its 3 smallest IsoFLOP budgets with 3
    sizes each (the least a parabola needs), or its `QUICK_RUNGS` smallest sizes by its 2
    smallest D."""
    base = spec or default_spec()
    data = base.model_dump()
    if base.ladder.two_axis:
        _quick_two_axis_ladder(base.ladder, data["ladder"])
    else:
        _quick_n_ladder(base, data)
    data["ladder"].update(repeats=1, repeats_below=None)
    train = data["train"]
    train.update(eval_every=100, checkpoint_every=200,
                 final_eval_tokens=min(train["final_eval_tokens"], 65_536))
    data["fit"].update(bootstrap=min(base.fit.bootstrap, 200))
    data["measure"].update(latency_repeats=10)
    return StudySpec.model_validate(data)


def _quick_n_ladder(base: StudySpec, data: dict) -> None:
    sizes = base.ladder.targets()[:QUICK_RUNGS]
    data["ladder"]["sizes"] = sizes
    if base.train.tokens is None and base.train.tokens_per_param is None:
        return  # the task's own budget (chosen at resolve time for its size) is kept
    scale = min(1.0, QUICK_MAX_UNITS / max(base.train.budget(n) for n in sizes))
    train = data["train"]
    if train["tokens_per_param"]:
        train["tokens_per_param"] *= scale
    else:
        train["tokens"] = max(1, int(train["tokens"] * scale))


def _quick_two_axis_ladder(ladder: LadderSpec, lad: dict) -> None:
    if ladder.isoflop is not None:
        lad["isoflop"].update(budgets=ladder.isoflop.budgets[:3], points=3)
        return
    lad["sizes"] = ladder.targets()[:QUICK_RUNGS]
    for key in ("tokens", "tokens_per_param"):
        if lad[key] is not None:
            lad[key] = sorted(lad[key])[:2]


PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))  # a new file is a new preset


def preset_spec(name: str) -> StudySpec:
    """A study spec that ships with scalelab (`src/scalelab/presets/NAME.yaml`): `default` is
    the default study (`scalelab run` without a spec), `gpu` a ladder to 100M parameters for
    one CUDA GPU. The presets are plain specs: copy one to start your own."""
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return load_spec(PRESET_DIR / f"{name}.yaml")


def default_spec() -> StudySpec:
    """The default study. Its ladder and budgets are a preset rather than StudySpec's field
    defaults, which stay the plain rules a spec builds on (one budget for every rung, one run
    per size), so a spec that sets `tokens` gets that budget for every rung."""
    return preset_spec("default")


def parse_options(options_model: type[BaseModel], options: dict, where: str) -> BaseModel:
    """Validate a task's or family's options with its own model; one line naming the key."""
    try:
        return options_model.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or where
        if first["type"] == "extra_forbidden":
            raise UserError(f"{where}: unknown key '{key}'") from None
        if first["type"] == "missing":
            raise UserError(f"{where}: '{key}' is required") from None
        raise UserError(f"{where}.{key}: {first['msg']}") from None


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    return f"{where}: {first['msg']}"


def parse_spec(data: object, source: str = "spec") -> StudySpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of keys to values at the top level")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{source}: {_format_error(err)}") from None


def load_spec(path: str | Path) -> StudySpec:
    """The spec in a YAML file. Its relative paths are resolved from the file's folder and
    stored absolute (`resolve_paths`), so the study does not depend on the working directory
    it is run from, and its stored spec rebuilds the same task from anywhere."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read spec {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: malformed YAML{where}") from None
    if isinstance(data, dict):
        data = resolve_paths(data, path.resolve().parent, source=str(path))
    return parse_spec(from_default_study(data), str(path))


# Task options that name a file, a folder or a glob, in any task (tabular and text `path`, the
# text task's `tokenizer_dir` and `tokenizer_file`). A path written from `~`, a
# `{stdlib}`-like folder or `/` is kept as written.
PATH_OPTIONS = ("path", "tokenizer_dir", "tokenizer_file")
# What must exist (a tokenizer_dir is made when missing).
CHECKED_PATHS = ("path", "tokenizer_file")


def resolve_paths(data: dict, base: Path, source: str | None = None) -> dict:
    """A copy of the spec mapping `data` with its relative paths resolved from the folder
    `base`: the task's PATH_OPTIONS, and the custom family's `module_dir` (the folder its
    factory's module is imported from; `base` itself when the spec names none) and the hf
    family's `config_dir`. A spec file resolves from its own folder (`load_spec`); a study
    compares a stored spec with the one it resumes with after resolving both from the working
    directory, as scalelab did before paths were resolved, so a study stored with relative
    paths still resumes.

    With `source` (the spec file), a data path that is not there is one UserError line naming
    the path as written and where it was looked for."""
    out = dict(data)
    task = out.get("task")
    if isinstance(task, dict):
        task = out["task"] = dict(task)
        for key in PATH_OPTIONS:
            written = task.get(key)
            if not isinstance(written, str) or not _relative(written):
                continue
            task[key] = os.path.normpath(base / written)
            if source is not None and key in CHECKED_PATHS:
                _check_exists(written, task[key], f"{source}: task.{key}")
    family = out.get("family")
    if isinstance(family, dict) and family.get("name") == "custom":
        family = out["family"] = dict(family)
        folder = family.get("module_dir")
        if folder is None or (isinstance(folder, str) and _relative(folder)):
            family["module_dir"] = os.path.normpath(base / (folder or "."))
    if isinstance(family, dict) and family.get("name") == "hf":  # its local config folder
        folder = family.get("config_dir")
        if isinstance(folder, str) and _relative(folder):
            out["family"] = {**family, "config_dir": os.path.normpath(base / folder)}
    return out


def _relative(path: str) -> bool:
    return bool(path) and not path.startswith(("~", "{")) and not os.path.isabs(path)


def _check_exists(written: str, resolved: str, where: str) -> None:
    if glob.has_magic(resolved):
        if glob.glob(resolved, recursive=True):
            return
    elif os.path.exists(resolved):
        return
    hint = ""
    if os.path.exists(written) or (glob.has_magic(written) and glob.glob(written, recursive=True)):
        hint = (f"; {written} is found from the working directory: write the path from the "
                "spec's folder, or absolute")
    raise UserError(f"{where} {written!r} not found: looked for {resolved} (a spec's relative "
                    f"paths are resolved from its own folder){hint}")


# The train keys that together make one budget rule: a spec that gives any of them replaces the
# default study's whole rule (its tokens, exponent and reference size), not one part of it.
BUDGET_KEYS = ("tokens", "tokens_exponent", "tokens_ref_nonembed", "tokens_per_param")


def starts_from_default_study(data: object) -> bool:
    """Whether a spec file starts from the default study (`from_default_study`)."""
    if not isinstance(data, dict) or "ladder" in data:
        return False
    task, family = data.get("task") or {}, data.get("family") or {}
    return isinstance(task, dict) and isinstance(family, dict) \
        and task.get("name", "pycode") == "pycode" and family.get("name", "gpt") == "gpt"


def base_note(path: str | Path) -> str | None:
    """The line `scalelab run` prints for a spec file that starts from the default study."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None  # load_spec has already said what is wrong with the file
    if not starts_from_default_study(data):
        return None
    return (f"{path} gives no ladder: it starts from the default study (preset 'default'), "
            "its keys replacing the preset's")


def from_default_study(data: object) -> object:
    """A partial spec file for the default task starts from the default study.

    Decision: a spec file that gives no `ladder` and trains the default study's task and family
    (pycode and gpt, or leaves them out) is the `default` preset with the file's keys replacing
    the preset's, key by key within each section: `train: {seed: 1}` is the default study with
    seed 1, not StudySpec's field defaults (another ladder, one run per size, one budget). A
    file that gives any budget key (BUDGET_KEYS) replaces the preset's budget rule as a whole.
    A file with its own ladder, task or family starts from StudySpec's field defaults, with the
    budget and lr chosen for its task (`ladder.resolve_train`). `scalelab run` says in one line
    which it started from. `parse_spec` (a dict through the API) never merges."""
    if not starts_from_default_study(data):
        return data
    assert isinstance(data, dict)
    preset = PRESET_DIR / "default.yaml"
    merged = yaml.safe_load(preset.read_text())
    for key, value in data.items():
        base = merged.get(key)
        if not (isinstance(value, dict) and isinstance(base, dict)):
            merged[key] = value
            continue
        if key == "train" and any(k in value for k in BUDGET_KEYS):
            base = {k: v for k, v in base.items() if k not in BUDGET_KEYS}
        merged[key] = {**base, **value}
    return merged


EXAMPLE_SPEC = """\
name: my-study
task: {name: pycode}
family: {name: gpt, block_size: 64}
ladder: {n_rungs: 6, min_nonembed: 1.0e4, max_nonembed: 1.0e6}
train: {tokens: 4000000, batch_size: 16, lr: 3.0e-3, seed: 0}
fit: {bootstrap: 1000}
"""
