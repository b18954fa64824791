"""The Task protocol: a task owns its data, its inputs, its loss and its metrics.

A task is what a study measures quality on. It owns

- its train and validation splits, and `batch(batch_size, generator)`: random training batches
  drawn from a seeded generator (so a rung's token stream is a pure function of its seed);
- `eval_data(n_units, split)`: the same fixed batches every time it is called, so every rung and
  every variant is scored on identical data;
- `loss(outputs, y, reduction)`: the training and validation loss (cross-entropy for language
  models and classifiers, mean squared error for regression);
- `evaluate(model, device, n_units, split, precision)`: loss plus the task's metrics
  (`metrics`), under the autocast rule of the study's `train.precision` (`autocast`);
- `example_input(batch_size)`: the only source of inputs for FLOP counting, latency, ONNX export
  and int8 calibration;
- `unit`: what D counts (byte, token or example), and `units_per_batch(batch_size)`;
- `io`: what a model of this task consumes and produces (`TaskIO`), from which a family builds
  its shapes;
- `fingerprint()`: a description and hash of the data, recorded with the study;
- optionally `n_folds` and `fold(k)`: k-fold cross-validation for small data; the ladder then
  trains one rung per size and fold (the fold is the rung's `repeat`), and the report shows the
  mean and spread per size.

`BaseTask` implements `evaluate`, `loss` and `units_per_batch` from `objective` and `io`; a task
subclasses it and provides the data. A user's own task can do the same and be handed to
`scalelab.run_study(..., task=MyTask())`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch.nn import functional as F

EVAL_BATCH = 128  # examples (or windows) per forward pass during evaluation

OBJECTIVES = ("lm", "classification", "regression")
KINDS = ("sequence", "vector", "image")


@dataclass(frozen=True)
class Metric:
    """A number a task reports beside its loss: a key of `evaluate`'s result and of a rung's
    `metrics`, and the column `val_<name>` of summary.json and runs.csv. The report, the
    terminal tables and the variants table read how to show it from here.

    label and unit: the report's two header lines ("val error" / "rate"); short: the terminal's
    header; format: a format spec of one value (".2%" a rate, ".4g" a number); of_loss: a
    function of the loss (bits per byte), left out of tables that show the loss's change;
    complement: the metric this one is 1 minus (accuracy of error), shown after it in the report
    and left out of the compact tables."""

    name: str
    label: str
    unit: str
    short: str
    format: str
    of_loss: bool = False
    complement: str | None = None

    @property
    def column(self) -> str:
        return f"val_{self.name}"


BPB = Metric("bpb", "val bits", "per byte", "bits/byte", ".4g", of_loss=True)
ERROR = Metric("error", "val error", "rate", "error", ".2%")
ACCURACY = Metric("accuracy", "val", "accuracy", "accuracy", ".2%", complement="error")
RMSE = Metric("rmse", "val RMSE", "target units", "RMSE", ".4g")


@dataclass(frozen=True)
class TaskIO:
    """What a model of a task consumes and produces.

    kind: "sequence" (token ids, next-token prediction at every position), "vector" (a row of
    float features) or "image" (channels x height x width floats).
    input_shape: the shape of one example's input: (context,), (n_features,) or (c, h, w).
    n_outputs: logits per example (per position for sequences): the vocabulary, the number of
    classes, or 1 for regression.
    vocab_size: sequences only: token ids lie in [0, vocab_size).
    """

    kind: str
    input_shape: tuple[int, ...]
    n_outputs: int
    vocab_size: int | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "input_shape": list(self.input_shape),
                "n_outputs": self.n_outputs, "vocab_size": self.vocab_size}


@runtime_checkable
class Task(Protocol):
    name: str
    unit: str
    objective: str
    io: TaskIO
    metrics: tuple[str, ...]

    def fingerprint(self) -> dict: ...

    def units_per_batch(self, batch_size: int) -> int: ...

    def batch(self, batch_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...

    def eval_data(self, n_units: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, outputs: torch.Tensor, y: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor: ...

    def evaluate(self, model: torch.nn.Module, device: torch.device, n_units: int,
                 split: str = "val", precision: str = "auto") -> dict[str, float]: ...

    def example_input(self, batch_size: int) -> torch.Tensor: ...


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether matmuls run in bf16 autocast: `precision` "bf16" or "fp32", or "auto" = bf16 on
    CUDA and fp32 on CPU (measured on a 2-core AMD EPYC with AVX-512 BF16 but no AMX, torch
    2.13: bf16 autocast was 8% slower at 1M parameters and 2x slower at 13k, because the
    casts cost more than the small GEMMs save; see docs/results.md, "Precision and compilation")."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of `precision` (see `uses_bf16`); a disabled context for fp32, so
    every device runs the same code path."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=uses_bf16(device, precision))


class BaseTask:
    """Loss, metrics and evaluation from `objective` and `io`; subclasses provide the data.

    Metrics by objective (all on the fixed batches of `eval_data`):
    - lm: loss in nats per token; `bpb`, bits per byte (loss / ln 2 / bytes_per_token);
    - classification: loss (cross-entropy, nats per example), `accuracy` and `error` = 1 - accuracy;
    - regression: loss (mean squared error of the standardised target), `rmse` in the target's
      own units (sqrt(loss) × target_scale).
    """

    name: ClassVar[str] = "task"
    unit: ClassVar[str] = "example"
    objective: str = "classification"
    io: TaskIO
    bytes_per_token: float = 1.0  # lm: bytes of text per token (1 for byte-level)
    target_scale: float = 1.0  # regression: standard deviation of the raw target
    n_folds: int = 1  # k-fold cross-validation: the driver trains one model per fold
    # The metrics `evaluate` reports, by objective (a task with metrics of its own declares them
    # here and computes them in its `evaluate`).
    METRICS: ClassVar[dict[str, tuple[Metric, ...]]] = {
        "lm": (BPB,), "classification": (ACCURACY, ERROR), "regression": (RMSE,)}

    def fold(self, k: int) -> BaseTask:
        """The task whose validation split is fold k (tasks without folds: itself)."""
        return self

    @property
    def train_units(self) -> int | None:
        """Units of D in the training split (bytes or tokens of a text, rows of a table), so a
        rung's epochs = D / train_units; None where a task does not know (an optional member:
        the ladder reads it with getattr, so a user's task need not have it)."""
        return None

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.METRICS[self.objective])

    def units_per_batch(self, batch_size: int) -> int:
        if self.io.kind == "sequence":
            return batch_size * self.io.input_shape[0]
        return batch_size

    def loss(self, outputs: torch.Tensor, y: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
        if self.objective == "regression":
            return F.mse_loss(outputs.float().reshape(-1), y.float().reshape(-1),
                              reduction=reduction)
        return F.cross_entropy(outputs.float().view(-1, outputs.size(-1)), y.reshape(-1),
                               reduction=reduction)

    def example_input(self, batch_size: int) -> torch.Tensor:
        """Inputs of the task's shape and type. Sequences: random token ids (fixed seed); other
        inputs: the first validation examples repeated to the batch size, so calibration and
        export see real values."""
        if self.io.kind == "sequence":
            gen = torch.Generator().manual_seed(0)
            return torch.randint(0, self.io.vocab_size or 2, (batch_size, *self.io.input_shape),
                                 generator=gen)
        x, _ = self.eval_data(batch_size, "val")
        reps = math.ceil(batch_size / x.size(0))
        return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size].contiguous()

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device, n_units: int,
                 split: str = "val", precision: str = "auto") -> dict[str, float]:
        """Loss and metrics over the fixed evaluation batches of `split`, under the autocast
        rule of `precision` (the study's `train.precision`), so a model is validated at the
        precision it was trained at."""
        was_training = model.training
        model.eval()
        xs, ys = self.eval_data(n_units, split)
        total, count, correct = 0.0, 0, 0
        for i in range(0, xs.size(0), EVAL_BATCH):
            x = xs[i : i + EVAL_BATCH].to(device)
            y = ys[i : i + EVAL_BATCH].to(device)
            with autocast(device, precision):
                out = model(x)
            total += self.loss(out, y, reduction="sum").item()
            count += y.numel()
            if self.objective == "classification":
                correct += int((out.argmax(dim=-1).reshape(-1) == y.reshape(-1)).sum())
        model.train(was_training)
        loss = total / count
        out: dict[str, float] = {"loss": loss}
        if self.objective == "lm":
            out["bpb"] = loss / (math.log(2) * self.bytes_per_token)
        elif self.objective == "classification":
            out["accuracy"] = correct / count
            out["error"] = 1.0 - correct / count
        elif self.objective == "regression":
            out["rmse"] = math.sqrt(loss) * self.target_scale if math.isfinite(loss) else loss
        return out


def describe_io(task: Any) -> str:
    io = task.io
    if io.kind == "sequence":
        return f"sequences of {io.input_shape[0]} tokens (vocabulary {io.vocab_size})"
    if io.kind == "vector":
        return f"vectors of {io.input_shape[0]} features -> {io.n_outputs} outputs"
    return f"images {'x'.join(map(str, io.input_shape))} -> {io.n_outputs} outputs"
