"""Compressed variants of a trained rung, measured like the rungs and stored in study.db.

A registry of methods (`base.REGISTRY`: int8, fp16, bf16, prune, sparse, lowrank, distill). A
method is one class in one module plus its registry line: the class declares its name, the
argument its method string takes, the families and task objectives it applies to, its notes and
report style, and how it makes and restores its variants; parsing, planning, the report, the CLI's
help and `scalelab list methods` read it from there. One job per module, imports pointing down
the flow (compress imports tasks, models, records, train, execute, storage; never study, report
or cli):

    base.py       the method plugin (CompressMethod and what it declares: Argument, Style,
                  ReportTable), Method (a parsed method string), Context (what a method gets),
                  Built (what it returns), Support, the registry (get_method, check_supported,
                  applicable)
    methods.py    parsing of method strings through the registry (pure: no torch)
    plan.py       plan_compress: the checked plan against the study's rows (before any write)
    driver.py     compress_study: one executor job per variant, each recorded as it ends
    job.py        one variant as a job: make -> measure (train.measure.measure_model)
    load.py       load_rung_model, load_variant (through the family and the method's restore)
    recover.py    the `+ft` recovery fine-tune (train_rung(model=...)) and saving smaller models
    layers.py     which Linear layers the family-neutral methods touch
    quantize.py   int8 (ONNX Runtime), fp16/bf16      prune.py    structured (gpt, mlp)
    sparse.py     unstructured magnitude               lowrank.py  truncated SVD
    distill.py    a smaller rung's shape trained under the rung (lm, classification)

The names below are imported lazily, so `import scalelab.compress.methods` does not import torch
(a method's own module is imported when its kind is first looked up).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CompressPlan": "scalelab.compress.plan",
    "plan_compress": "scalelab.compress.plan",
    "compress_study": "scalelab.compress.driver",
    "VARIANTS_DIR": "scalelab.compress.driver",
    "load_rung_model": "scalelab.compress.load",
    "load_variant": "scalelab.compress.load",
    "REGISTRY": "scalelab.compress.base",
    "get_method": "scalelab.compress.base",
    "check_supported": "scalelab.compress.base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scalelab.compress' has no attribute {name!r}")
