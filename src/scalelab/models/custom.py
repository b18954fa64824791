"""Family `custom`: the user's own model, sized through one integer knob.

The user writes `def make(knob: int) -> nn.Module` (the knob is a width, say) and names it in the
spec as `factory: "package.module:function"`, or hands the callable to the Python API with
`CustomFamily.from_callable(make)`. scalelab counts the parameters of the model it returns
(`count_params` from base: non-embedding = all minus nn.Embedding weights) and searches the knob
for each target size with `closest_knob` between `knob_min` and `knob_max`.

A factory with a parameter named `io`, `def make(knob, io)`, is also told what the task gives:
`io` is the task's `TaskIO` (`kind`, `input_shape`, `n_outputs`, `vocab_size`), so it need not
guess its input width or number of outputs. A factory without one is called with the knob alone.

Shape: `{"factory": "package.module:function", "knob": k}`, plus `"io"` (`TaskIO.to_dict()`)
for a factory that takes it; `build` calls the factory with k (and that io). The factory owns
the model's inputs and outputs: it must return a model whose forward takes the task's input
batch and returns the task's outputs (the study checks this with one forward pass before it
writes anything: `models.base.check_forward`).

Decisions:
- The factory is imported and called once with `knob_min` at construction, so a bad factory is
  one clear UserError before anything trains (a factory that takes `io` is first called when the
  ladder sizes it, which is still before anything is written).
- Counting builds the model on the meta device (no memory, no init time), so searching large
  knobs is cheap; a factory that cannot build on meta is counted by a real build instead.
  Counts are cached per knob.
- `from_callable` keeps the callable on the instance and stores `module:qualname` in the shape.
  A shape from a function defined inside another function or in `__main__` cannot be rebuilt
  by import later; the in-process study does not need to.
- The knob must make the count grow (closest_knob bisects); this is not checked.
- The factory's module is imported from `module_dir` (a spec file sets it to the spec's own
  folder unless it names another; `scalelab.spec.load_spec`), then from the current working
  directory (as `python -m` has it), then from the rest of the import path.
- `fingerprint()`: the factory's name and a hash of its module's code as parsed (comments and
  layout do not count, code and docstrings do), so a study notices a factory changed since it
  was planned even where the parameter counts happen to stay the same (`scalelab.planned`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import os
import sys
import textwrap
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


def resolve_factory(factory: str, module_dir: str | None = None) -> Callable[..., Any]:
    """The callable named by "package.module:function" (the part after ':' may be dotted, e.g.
    "module:Class.method"), imported from `module_dir`, the working directory or the rest of
    the import path; or a one-line UserError saying what is wrong and where it looked."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"custom family: factory {factory!r} must be written "
                        f"'package.module:function'")
    for folder in (module_dir, os.getcwd()):
        if folder is not None and folder not in sys.path:
            sys.path.append(folder)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        where = ""
        missing = getattr(err, "name", None) or ""
        if missing and (module_name + ".").startswith(missing + "."):  # not found itself
            looked = os.path.join(module_dir or os.getcwd(), module_name.replace(".", os.sep))
            where = f" (looked for {looked}.py, then on the import path)"
        raise UserError(f"custom family: cannot import module {module_name!r} of factory "
                        f"{factory!r}: {' '.join(str(err).split())}{where}") from None
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


def takes_io(fn: Callable[..., Any]) -> bool:
    """Whether the factory has a parameter named `io` (a keyword it can be given)."""
    try:
        param = inspect.signature(fn).parameters.get("io")
    except (TypeError, ValueError):  # a callable without a signature Python can read
        return False
    return param is not None and param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)


def code_hash(fn: Callable[..., Any]) -> str | None:
    """SHA-256 of the code of the module that defines `fn` as parsed (`ast.dump`: comments and
    layout do not count), or of `fn`'s own source where the module's cannot be read; None for a
    callable whose source Python cannot find (typed into an interactive session)."""
    for obj in (inspect.getmodule(fn), fn):
        try:
            source = inspect.getsource(obj)  # type: ignore[arg-type]
            tree = ast.parse(textwrap.dedent(source))
        except (OSError, TypeError, SyntaxError):
            continue
        return hashlib.sha256(ast.dump(tree).encode()).hexdigest()
    return None


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
        module_dir: str | None = Field(
            None, description="folder the factory's module is imported from first; a spec "
                              "file's own folder unless it names another (a relative one is "
                              "resolved from the spec's folder)")

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
        self._fn = fn if fn is not None else resolve_factory(options.factory, options.module_dir)
        self._counts: dict[tuple[int, TaskIO | None], int] = {}
        if not takes_io(self._fn):  # one that does is first called by shape_for, with the io
            model = self._make(self._fn, options.knob_min)  # a real call: real errors
            self._counts[(options.knob_min, None)] = count_params(model)[1]

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

    def _make(self, fn: Callable[..., Any], knob: int, name: str | None = None,
              io: TaskIO | None = None) -> nn.Module:
        """Call the factory (with `io=` when it takes one); anything but an nn.Module, or an
        exception, is a UserError."""
        name = name or self.factory
        try:
            model = fn(knob, io=io) if takes_io(fn) else fn(knob)
        except Exception as err:
            raise UserError(f"custom family: factory {name!r} raised for knob {knob}: "
                            f"{_one_line(err)}") from None
        if not isinstance(model, nn.Module):
            raise UserError(f"custom family: factory {name!r} returned "
                            f"{type(model).__name__} {_short_repr(model)} for knob {knob}, "
                            f"not a torch.nn.Module")
        return model

    def count_knob(self, knob: int, io: TaskIO | None = None) -> int:
        """n_nonembed of the model at this knob (for this io, where the factory takes one;
        cached; built on the meta device when the factory allows it)."""
        key = (knob, io if takes_io(self._fn) else None)
        if key not in self._counts:
            try:
                with torch.device("meta"):
                    model = self._make(self._fn, knob, io=io)
            except UserError:
                model = self._make(self._fn, knob, io=io)  # the real call gives the real error
            self._counts[key] = count_params(model)[1]
        return self._counts[key]

    def shape_for(self, target_n: float, io: TaskIO) -> dict:
        if io.kind not in self.accepts:
            raise ValueError(f"family 'custom' ({self.factory}) models "
                             f"{' or '.join(self.accepts)} inputs, not {io.kind}")
        lo, hi = self.options.knob_min, self.options.knob_max

        def count(knob: int) -> int:
            return self.count_knob(knob, io)

        knob = lo if lo == hi else closest_knob(target_n, count, lo=lo, hi=hi)
        check_reached(target_n, count(knob),
                      f"model of factory {self.factory!r} (knob {lo}..{hi})")
        if takes_io(self._fn):
            return {"factory": self.factory, "knob": knob, "io": io.to_dict()}
        return {"factory": self.factory, "knob": knob}  # as before io: old shapes stay equal

    def build(self, shape: dict) -> nn.Module:
        name = shape["factory"]
        fn = self._fn if name == self.factory else resolve_factory(name, self.options.module_dir)
        io = shape.get("io")
        return self._make(fn, int(shape["knob"]), name,
                          io=None if io is None else TaskIO(
                              io["kind"], tuple(io["input_shape"]), io["n_outputs"],
                              io.get("vocab_size")))

    def builder(self, shape: dict) -> str:
        """"custom family: factory 'my_model:make' at knob 5", for messages."""
        return f"custom family: factory {shape['factory']!r} at knob {shape['knob']}"

    def fingerprint(self) -> dict:
        """The factory's name and a hash of its module's code (see the module docstring)."""
        return {"family": self.name, "factory": self.factory, "code_sha256": code_hash(self._fn)}

    def describe(self, shape: dict) -> str:
        """"make(64)": the factory's function name and the knob."""
        return f"{shape['factory'].rpartition(':')[2].rpartition('.')[2]}({shape['knob']})"
