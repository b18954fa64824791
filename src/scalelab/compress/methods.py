"""The method strings of `scalelab compress --methods` and the spec's `compress.methods`.

Parsing is pure (no torch, no stage imported), so a spec's `compress:` section can be checked
before any training starts. Which methods apply to a study's family and task is not a question of
syntax: `scalelab.compress.base` (the registry) answers it. Syntax, one item per method,
comma-separated on the command line:

    int8            dynamic int8 quantization for CPU inference (ONNX Runtime), see quantize.py
    fp16, bf16      every weight cast to that dtype (stored and computed in it)
    prune:R[+ft]    structured pruning: remove the fraction R of each layer's attention heads and
                    MLP channels (gpt) or hidden units (mlp) (0 < R < 1); `+ft` adds a short
                    recovery fine-tune
    sparse:S        unstructured magnitude pruning to sparsity S of every Linear weight but tied
                    heads (0 < S < 1); a quality-and-size study, no speed claim
    lowrank:F[+ft]  Linear layers replaced by SVD factors of rank F x full rank (0 < F < 1)
    distill[:R]     rung R's shape trained as a student of the compressed rung (default R: the next
                    smaller trained rung), compared with rung R itself (same shape, same data)
"""

from __future__ import annotations

from dataclasses import dataclass

from scalelab.errors import UserError

KINDS = ("int8", "fp16", "bf16", "prune", "sparse", "lowrank", "distill")
RATIO_KINDS = {"prune": "ratio", "sparse": "sparsity", "lowrank": "rank fraction"}
FINETUNE_KINDS = ("prune", "lowrank")
# fp16 is asked for by name only: most CPUs have no fp16 matmul kernel (PyTorch converts every
# element to fp32), so on them it is slower than fp32 and its latency is not steady from one run
# to the next (measured: quantize.py's docstring). bf16, the dtype CUDA training autocasts to, is
# the default half precision.
DEFAULT_METHODS = ["int8", "bf16", "prune:0.25", "prune:0.5", "prune:0.5+ft",
                   "sparse:0.5", "sparse:0.9", "lowrank:0.5", "distill"]
SYNTAX = "int8, fp16, bf16, prune:R[+ft], sparse:S, lowrank:F[+ft], distill[:RUNG]"


@dataclass(frozen=True)
class Method:
    kind: str
    value: float | None = None  # ratio / sparsity / rank fraction; for distill the student rung
    finetune: bool = False

    @property
    def text(self) -> str:
        """Canonical spelling, e.g. `prune:0.5+ft`."""
        out = self.kind
        if self.value is not None:
            out += f":{int(self.value)}" if self.kind == "distill" else f":{self.value:g}"
        return out + ("+ft" if self.finetune else "")

    def variant_name(self, rung: int, student: int | None = None) -> str:
        """Name in the variants table: r<rung>-<kind><value>[-ft], e.g. r5-prune0.5-ft."""
        if self.kind == "distill":
            return f"r{rung}-distill-r{student}"
        name = f"r{rung}-{self.kind}"
        if self.value is not None:
            name += f"{self.value:g}"
        return name + ("-ft" if self.finetune else "")


def parse_method(item: str) -> Method:
    """One method string (case and surrounding spaces ignored) as a `Method`; UserError if bad."""
    text = item.strip().lower()
    if not text:
        raise UserError(f"empty method in the method list; known methods: {SYNTAX}")
    finetune = text.endswith("+ft")
    base = text[:-3] if finetune else text
    kind, _, arg = base.partition(":")
    if kind not in KINDS:
        raise UserError(f"unknown compression method {item.strip()!r}; known methods: {SYNTAX}")
    if finetune and kind not in FINETUNE_KINDS:
        raise UserError(f"{item.strip()}: '+ft' (recovery fine-tune) applies to prune and "
                        "lowrank only")
    if kind in RATIO_KINDS:
        if not arg:
            raise UserError(f"{item.strip()}: {kind} needs a {RATIO_KINDS[kind]}, "
                            f"e.g. {kind}:0.5")
        try:
            value = float(arg)
        except ValueError:
            raise UserError(
                f"{item.strip()}: {RATIO_KINDS[kind]} {arg!r} is not a number") from None
        if not 0.0 < value < 1.0:
            raise UserError(f"{item.strip()}: {RATIO_KINDS[kind]} must be between 0 and 1 "
                            f"(exclusive), got {arg}")
        return Method(kind, value, finetune)
    if kind == "distill":
        if not arg:
            return Method("distill")
        if not arg.isdigit():
            raise UserError(f"{item.strip()}: distill takes a student rung index, e.g. distill:2")
        return Method("distill", int(arg))
    if arg:
        raise UserError(f"{item.strip()}: {kind} takes no value")
    return Method(kind)


def parse_methods(items: list[str] | str) -> list[Method]:
    """Parse a list (or one comma-separated string) of methods; duplicates are dropped."""
    if isinstance(items, str):
        items = items.split(",")
    parts = [p for item in items for p in str(item).split(",")]
    if not parts or all(not p.strip() for p in parts):
        raise UserError(f"no compression methods given; known methods: {SYNTAX}")
    out: list[Method] = []
    for part in parts:
        m = parse_method(part)
        if m not in out:
            out.append(m)
    return out


def parse_rung(value: str | int) -> str | int:
    """'largest' or a non-negative rung index (strings of digits are accepted)."""
    if isinstance(value, bool):
        raise UserError(f"rung must be 'largest' or a rung index, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise UserError(f"rung must be 'largest' or a rung index >= 0, got {value}")
        return value
    text = str(value).strip().lower()
    if text == "largest":
        return "largest"
    if text.isdigit():
        return int(text)
    raise UserError(f"rung must be 'largest' or a rung index, got {value!r}")
