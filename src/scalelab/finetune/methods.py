"""Fine-tuning method strings: parsing and defaults (pure: no torch, no stage).

Syntax: a comma-separated list of `KIND[:KEY=VALUE[:KEY=VALUE...]]`, e.g.

    full,lora:r=4,lora:r=16,lora:r=4:targets=attn,ia3

Kinds and keys (defaults in brackets):

    full    every weight trains.                       lr [1x]
    lora    LoRA (Hugging Face PEFT) on Linear layers.  r (rank, required), alpha [16],
            dropout [0.0], targets [all], lr [3x]
    ia3     IA3 (PEFT): learned scaling vectors.        targets [the IA3 paper's places], lr [10x]

`lr` is an absolute learning rate (`lr=3e-4`) or a multiple of the rung's own pre-training peak
learning rate (`lr=0.1x`), which follows the study's size-aware rule (lr ∝ N^-1/3), so a
multiple keeps that rule across the ladder. `targets` is `all` (every Linear layer but the output
layer), `attn` (the Linear layers inside attention modules), `mlp` (those inside MLP / feed-forward
modules), or module names joined with `+` (`qkv+mlp.fc`), each matching the Linear layers whose
path is that name or ends in `.name` (PEFT's rule).

Decisions (the defaults, with the reasons):

- Per-method learning rates, measured rather than borrowed. On the --quick ladder (rungs 0 and
  3, 150k bytes of the stdlib's test/ files) a sweep of the multiple of the rung's own peak gave
  (validation loss after fine-tuning, rung 0 / rung 3):
      full  0.03x 2.324/2.185  0.1x 2.282/2.141  0.3x 2.231/2.088  1x 2.180/2.047  3x 2.191/2.070
      lora:r=4   0.3x 2.329/2.188  1x 2.293/2.152  3x 2.281/2.126  10x 2.287/-
      lora:r=16  0.3x 2.311/2.180  1x 2.273/2.130  3x 2.238/2.090  10x 2.240/-
  so full fine-tuning defaults to the pre-training peak (1x) and LoRA to 3x. The usual advice
  for large models (full fine-tuning at about a tenth of pre-training's rate) does not hold
  for these small, briefly trained rungs: fine-tuning them is close to continued pre-training.
  LoRA wanting about 3x full fine-tuning's rate matches the ratio reported for LoRA (about 10x
  in "LoRA without regret", with alpha fixed). IA3, with a few thousand scaling vectors
  starting at 1, wants more still: 1x 2.371/2.240, 3x 2.364/2.228, 10x 2.361/2.214, 30x
  2.361/2.208; it defaults to 10x, within 0.006 nats of the best measured and a third of its
  step size. docs/results.md gives the sweep; `lr=` overrides any default.
- alpha = 16 for every rank (not alpha = 2r): the LoRA update is scaled by alpha / r, so with a
  fixed alpha the size of the early updates, and so the best learning rate, does not change with
  the rank (Hu et al. 2021 fix alpha likewise). Ranks can then be compared at one learning rate.
- dropout 0: the second task has thousands of windows per parameter of the adapter; dropout is
  a regulariser for small data sets, and it makes a LoRA model differ between train and eval.
- targets `all`, output layer excluded: LoRA on every Linear layer is the stronger and now usual
  choice (QLoRA; "LoRA without regret"); attention-only LoRA (`targets=attn`, Hu et al.'s
  original placement) is offered for the comparison. The output layer is left out because in a
  GPT it is tied to the token embedding: a LoRA on it could not be merged without changing the
  embedding too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scalelab.errors import UserError

KINDS = ("full", "lora", "ia3")
DEFAULT_METHODS = ("full", "lora:r=4", "lora:r=16")
DEFAULT_LR_MULT = {"full": 1.0, "lora": 3.0, "ia3": 10.0}
DEFAULT_ALPHA = 16.0
DEFAULT_DROPOUT = 0.0
TARGET_ALIASES = ("all", "attn", "mlp")
SYNTAX = ("full[:lr=X], lora:r=R[:alpha=A][:dropout=P][:targets=T][:lr=X], ia3[:targets=T][:lr=X]; "
          "X is a learning rate (3e-4) or a multiple of the rung's own (0.1x); T is all, attn, "
          "mlp, or module names joined with +")
_KEYS = {"full": ("lr",), "lora": ("r", "alpha", "dropout", "targets", "lr"),
         "ia3": ("targets", "lr")}
_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass(frozen=True)
class LR:
    """A learning rate: `value` absolute, or `value` times the rung's own peak when `relative`."""

    value: float
    relative: bool

    def resolve(self, rung_lr: float) -> float:
        return self.value * rung_lr if self.relative else self.value

    @property
    def text(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}"


@dataclass(frozen=True)
class FTMethod:
    """One parsed fine-tuning method. `targets` None: the method's default placement."""

    kind: str
    text: str
    lr: LR
    rank: int | None = None
    alpha: float = DEFAULT_ALPHA
    dropout: float = DEFAULT_DROPOUT
    targets: tuple[str, ...] | None = None
    given: tuple[str, ...] = field(default=(), compare=False)

    @property
    def peft(self) -> bool:
        return self.kind != "full"

    @property
    def slug(self) -> str:
        """The method's part of a fine-tune's name: the kind, the rank, then every setting that
        differs from its default (`lora-r4`, `lora-r4-attn`, `full-lr0.3x`)."""
        parts = [self.kind + (f"-r{self.rank}" if self.rank is not None else "")]
        if self.kind == "lora" and self.alpha != DEFAULT_ALPHA:
            parts.append(f"a{self.alpha:g}")
        if self.kind == "lora" and self.dropout != DEFAULT_DROPOUT:
            parts.append(f"d{self.dropout:g}")
        if self.targets is not None:
            parts.append("+".join(self.targets))
        if "lr" in self.given:
            parts.append(f"lr{self.lr.text}")
        return "-".join(parts)

    def settings(self) -> dict:
        out: dict = {"method": self.text, "kind": self.kind, "lr": self.lr.text}
        if self.kind == "lora":
            out.update(rank=self.rank, alpha=self.alpha, dropout=self.dropout)
        if self.kind != "full":
            out["targets"] = list(self.targets) if self.targets is not None else None
        return out


def _float(text: str, what: str, key: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{what}: {key} must be a number, got {text!r}") from None


def parse_lr(text: str, what: str) -> LR:
    relative = text.endswith("x")
    value = _float(text[:-1] if relative else text, what, "lr")
    if not value > 0 or value != value or value == float("inf"):
        raise UserError(f"{what}: lr must be positive, got {text!r}")
    return LR(value, relative)


def parse_method(text: str) -> FTMethod:
    """One method string, or a UserError naming what is wrong."""
    text = text.strip()
    kind, *pairs = text.split(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UserError(f"unknown fine-tuning method {text!r}; methods: {SYNTAX}")
    opts: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise UserError(f"{text}: write settings as key=value, got {pair!r}")
        if key not in _KEYS[kind]:
            raise UserError(f"{text}: {kind} has no setting {key!r} (it takes "
                            f"{', '.join(_KEYS[kind])})")
        if key in opts:
            raise UserError(f"{text}: {key} is given twice")
        opts[key] = value.strip()
    lr = parse_lr(opts["lr"], text) if "lr" in opts else LR(DEFAULT_LR_MULT[kind], True)
    rank = None
    alpha, dropout = DEFAULT_ALPHA, DEFAULT_DROPOUT
    if kind == "lora":
        if "r" not in opts:
            raise UserError(f"{text}: LoRA needs a rank, e.g. lora:r=8")
        try:
            rank = int(opts["r"])
        except ValueError:
            raise UserError(f"{text}: r must be a whole number, got {opts['r']!r}") from None
        if rank < 1:
            raise UserError(f"{text}: r must be at least 1, got {rank}")
        if "alpha" in opts:
            alpha = _float(opts["alpha"], text, "alpha")
            if not alpha > 0:
                raise UserError(f"{text}: alpha must be positive, got {opts['alpha']!r}")
        if "dropout" in opts:
            dropout = _float(opts["dropout"], text, "dropout")
            if not 0 <= dropout < 1:
                raise UserError(f"{text}: dropout must be in [0, 1), got {opts['dropout']!r}")
    targets = None
    if "targets" in opts:
        names = tuple(n.strip() for n in opts["targets"].split("+"))
        bad = [n for n in names if not n or not _NAME.match(n)]
        if bad:
            raise UserError(f"{text}: target module names are letters, digits, '_' and '.', "
                            f"joined with '+'; got {opts['targets']!r}")
        if any(n in TARGET_ALIASES for n in names) and len(names) > 1:
            raise UserError(f"{text}: {', '.join(TARGET_ALIASES)} stand alone; join module "
                            "names with '+' instead")
        targets = names
    return FTMethod(kind, text, lr, rank, alpha, dropout, targets, tuple(opts))


def parse_methods(methods: str | list[str] | tuple[str, ...] | None) -> list[FTMethod]:
    """A comma-separated string (or a list) of methods; the default list when None. Two methods
    with the same name are an error."""
    if methods is None:
        methods = list(DEFAULT_METHODS)
    if isinstance(methods, str):
        methods = [m for m in methods.split(",")]
    items = [m.strip() for m in methods]
    if not items or any(not m for m in items):
        raise UserError(f"--methods: list methods separated by commas ({SYNTAX})")
    parsed = [parse_method(m) for m in items]
    slugs = [m.slug for m in parsed]
    dup = sorted({s for s in slugs if slugs.count(s) > 1})
    if dup:
        raise UserError(f"--methods names {dup[0]} twice; list each method once")
    return parsed


__all__ = ["DEFAULT_METHODS", "FTMethod", "KINDS", "LR", "SYNTAX", "parse_method",
           "parse_methods"]
