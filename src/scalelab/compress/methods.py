"""The method strings of `scalelab compress --methods` and the spec's `compress.methods`.

Syntax, one item per method, comma-separated on the command line: a registered kind, then
`:VALUE` when its method takes an argument, then `+ft` when it offers a recovery fine-tune, e.g.
`int8`, `prune:0.5+ft`, `distill:2`. What each kind takes is declared by its class
(`base.CompressMethod`: `argument`, `finetune_option`), so the parsing here, the syntax shown in
messages (`syntax()`), the default list (`default_methods()`) and the CLI's help read the
registry (`base.REGISTRY`) and name no method. Which methods apply to a study's family and task
is not a question of syntax: `base.check_supported` answers it.
"""

from __future__ import annotations

from scalelab.compress.base import REGISTRY, Method, get_method
from scalelab.errors import UserError


def kinds() -> tuple[str, ...]:
    """The registered method kinds, in registry order."""
    return tuple(REGISTRY)


def syntax() -> str:
    """Every kind's method string syntax: "int8, fp16, bf16, prune:R[+ft], ..."."""
    return ", ".join(get_method(kind).syntax for kind in REGISTRY)


def default_methods() -> list[str]:
    """The default list (no `--methods`): each kind's `defaults`, in registry order."""
    return [text for kind in REGISTRY for text in get_method(kind).defaults]


def parse_method(item: str) -> Method:
    """One method string (case and surrounding spaces ignored) as a `Method`; UserError if bad."""
    text = item.strip().lower()
    if not text:
        raise UserError(f"empty method in the method list; known methods: {syntax()}")
    finetune = text.endswith("+ft")
    base = text[:-3] if finetune else text
    kind, _, arg = base.partition(":")
    if kind not in REGISTRY:
        raise UserError(f"unknown compression method {item.strip()!r}; known methods: "
                        f"{syntax()}")
    return get_method(kind).parse(arg, finetune, item.strip())


def parse_methods(items: list[str] | str) -> list[Method]:
    """Parse a list (or one comma-separated string) of methods; duplicates are dropped."""
    if isinstance(items, str):
        items = items.split(",")
    parts = [p for item in items for p in str(item).split(",")]
    if not parts or all(not p.strip() for p in parts):
        raise UserError(f"no compression methods given; known methods: {syntax()}")
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


__all__ = ["Method", "default_methods", "kinds", "parse_method", "parse_methods", "parse_rung",
           "syntax"]
