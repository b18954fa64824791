"""Fine-tuning of a trained study's rungs on a second task: full fine-tuning and PEFT (LoRA, IA3),
matched budgets, and how the choice scales with N.

One job per module, imports pointing down the flow (finetune imports tasks, models, records,
train, execute, store, compress.load and laws; never study, report or cli):

    methods.py      parsing of method strings and their defaults (pure: no torch)
    second_task.py  `--on`: the second task, its default (the stdlib's test/ files), the fit check
    plan.py         plan_finetune: rungs, methods, budget, targets; every check before any write
    adapters.py     target layers, PEFT LoRA/IA3 on any family's model, new heads, counts, merge
    driver.py       run_finetunes: one executor job per fine-tune, each recorded as it goes
    job.py          one fine-tune as a job: load -> zero-shot -> train (train_rung) -> measure
    scaling.py      laws per method, gaps to full fine-tuning with intervals, cost slopes
    load.py         a stored fine-tune back as the trained (PEFT) model and the merged one

The names below are imported lazily, so `import scalelab.finetune.methods` (the CLI's help) does
not import torch or peft.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "plan_finetune": "scalelab.finetune.plan",
    "FineTunePlan": "scalelab.finetune.plan",
    "run_finetunes": "scalelab.finetune.driver",
    "analyse": "scalelab.finetune.scaling",
    "load_finetune": "scalelab.finetune.load",
    "parse_methods": "scalelab.finetune.methods",
    "parse_on": "scalelab.finetune.second_task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scalelab.finetune' has no attribute {name!r}")
