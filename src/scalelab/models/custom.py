"""Family `custom`: the user's own model, sized through one integer knob.

The user writes `def make(knob: int) -> nn.Module` (the knob is a width, say) and names it in the
spec as `factory: "package.module:function"`, or hands the callable to the Python API with
`CustomFamily.from_callable(make)`. scalelab counts the parameters of the model it returns
(`count_params` from base: non-embedding = all minus nn.Embedding weights) and searches the knob
for each target size with `closest_knob` between `knob_min` and `knob_max`.

Shape: `{"factory": "package.module:function", "knob": k}`; `build` calls the factory with k.
The factory owns the model's inputs and outputs: it must return a model whose forward takes the
task's input batch and returns the task's outputs.

Decisions:
- The factory is imported and called once with `knob_min` at construction, so a bad factory is
  one clear UserError before anything trains.
- Counting builds the model on the meta device (no memory, no init time), so searching large
  knobs is cheap; a factory that cannot build on meta is counted by a real build instead.
  Counts are cached per knob.
- `from_callable` keeps the callable on the instance and stores `module:qualname` in the shape.
  A shape from a function defined inside another function or in `__main__` cannot be rebuilt
  by import later; the in-process study does not need to.
- The knob must make the count grow (closest_knob bisects); this is not checked.
- The factory's module is imported with the current working directory on the import path (as
  `python -m` has it), so a `my_model.py` beside the spec works from the console script too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from scalelab.errors import UserError
from scalelab.models.base import FamilyBase, closest_knob, count_params
from scalelab.models.mlp import check_reached
from scalelab.spec import parse_options
from scalelab.tasks.base import KINDS, TaskIO


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def resolve_factory(factory: str) -> Callable[[int], Any]:
    """The callable named by "package.module:function" (the part after ':' may be dotted, e.g.
    "module:Class.method"), or a one-line UserError saying what is wrong."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"custom family: factory {factory!r} must be written "
                        f"'package.module:function'")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"custom family: cannot import module {module_name!r} of factory "
                        f"{factory!r}: {' '.join(str(err).split())}") from None
    except Exception as err:  # the module itself raised while importing
        raise UserError(f"custom family: importing module {module_name!r} of factory "
                        f"{factory!r} raised {_one_line(err)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"custom family: module {module_name!r} has no attribute {attr!r} "
                            f"(factory {factory!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"custom family: factory {factory!r} is not callable "
                        f"(it is {type(obj).__name__} {_short_repr(obj)})")
    return obj


def _short_repr(obj: Any, limit: int = 60) -> str:
    text = " ".join(repr(obj).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CustomFamily(FamilyBase):
    """Family `custom`; see the module docstring."""

    name = "custom"
    accepts: tuple[str, ...] = KINDS

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        factory: str = Field(description="'package.module:function' taking one int knob")
        knob_min: int = Field(1, ge=1)
        knob_max: int = Field(65536, ge=1)
        accepts: list[str] = Field(default_factory=lambda: list(KINDS))

        @field_validator("knob_max")
        @classmethod
        def _max_at_least_min(cls, v: int, info: ValidationInfo) -> int:
            lo = info.data.get("knob_min")
            if lo is not None and v < lo:
                raise ValueError(f"must be >= knob_min ({lo})")
            return v

        @field_validator("accepts")
        @classmethod
        def _known_kinds(cls, v: list[str]) -> list[str]:
            unknown = [k for k in v if k not in KINDS]
            if unknown or not v:
                raise ValueError(f"must list input kinds among {', '.join(KINDS)}")
            return v

    def __init__(self, options: Options, fn: Callable[[int], Any] | None = None):
        """`fn`: the factory itself (see `from_callable`); otherwise `options.factory` is
        imported. Either way the factory is called once with `knob_min` here."""
        self.options = options
        self.factory = options.factory
        self.accepts = tuple(options.accepts)
        self._fn = fn if fn is not None else resolve_factory(options.factory)
        self._counts: dict[int, int] = {}
        self._counts[options.knob_min] = count_params(self._make(self._fn, options.knob_min))[1]

    @classmethod
    def from_callable(cls, fn: Callable[[int], Any],
                      accepts: tuple[str, ...] | list[str] = KINDS, knob_min: int = 1,
                      knob_max: int = 65536) -> CustomFamily:
        """A family from a Python callable (the API's way in); the shape records
        `module:qualname`."""
        if not callable(fn):
            raise UserError(f"custom family: factory is not callable (it is "
                            f"{type(fn).__name__} {_short_repr(fn)})")
        module = getattr(fn, "__module__", None) or "__main__"
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        options = parse_options(cls.Options, {"factory": f"{module}:{qualname}",
                                              "knob_min": knob_min, "knob_max": knob_max,
                                              "accepts": list(accepts)}, "family (custom)")
        return cls(options, fn=fn)  # type: ignore[arg-type]

    def _make(self, fn: Callable[[int], Any], knob: int, name: str | None = None) -> nn.Module:
        """Call the factory; anything but an nn.Module, or an exception, is a UserError."""
        name = name or self.factory
        try:
            model = fn(knob)
        except Exception as err:
            raise UserError(f"custom family: factory {name!r} raised for knob {knob}: "
                            f"{_one_line(err)}") from None
        if not isinstance(model, nn.Module):
            raise UserError(f"custom family: factory {name!r} returned "
                            f"{type(model).__name__} {_short_repr(model)} for knob {knob}, "
                            f"not a torch.nn.Module")
        return model

    def count_knob(self, knob: int) -> int:
        """n_nonembed of the model at this knob (cached; built on the meta device when the
        factory allows it)."""
        if knob not in self._counts:
            try:
                with torch.device("meta"):
                    model = self._fn(knob)
            except Exception:
                model = None
            if not isinstance(model, nn.Module):
                model = self._make(self._fn, knob)  # the real call gives the real error
            self._counts[knob] = count_params(model)[1]
        return self._counts[knob]

    def shape_for(self, target_n: float, io: TaskIO) -> dict:
        if io.kind not in self.accepts:
            raise ValueError(f"family 'custom' ({self.factory}) models "
                             f"{' or '.join(self.accepts)} inputs, not {io.kind}")
        lo, hi = self.options.knob_min, self.options.knob_max
        knob = lo if lo == hi else closest_knob(target_n, self.count_knob, lo=lo, hi=hi)
        check_reached(target_n, self.count_knob(knob),
                      f"model of factory {self.factory!r} (knob {lo}..{hi})")
        return {"factory": self.factory, "knob": knob}

    def build(self, shape: dict) -> nn.Module:
        name = shape["factory"]
        fn = self._fn if name == self.factory else resolve_factory(name)
        return self._make(fn, int(shape["knob"]), name)


    def describe(self, shape: dict) -> str:
        """"make(64)": the factory's function name and the knob."""
        return f"{shape['factory'].rpartition(':')[2].rpartition('.')[2]}({shape['knob']})"
