"""ONNX export of a rung or a variant, checked with ONNX Runtime against the PyTorch logits.

Exporter decision: torch 2.13's `torch.onnx.export` defaults to the torch.export-based ("dynamo")
exporter, which needs `onnxscript`; the TorchScript exporter (`dynamo=False`) still works but is
deprecated. We use the dynamo exporter with a dynamic batch dimension (every other dimension is
fixed at the example's: a GPT's sequence length is its block size) and fall back to the
TorchScript one only when it fails, saying which one wrote the file. On this machine both
reproduce the PyTorch logits to about 3e-7 (fp32); the dynamo exporter takes a few seconds per
model, the TorchScript one well under a second. The dynamic batch is given positionally
(`dynamic_shapes=({0: batch},)`), so it works whatever the forward's argument is called (a GPT's
`idx`, an MLP's `x`).

Inputs: the export's example is `task.example_input(batch)`, the one source of model inputs
(token ids for sequence tasks, float32 examples for vector and image tasks); nothing here makes up
inputs. The graph has one input and one output whose names are kept from the GPT-only version for
the files people already deploy: `idx` (int64 token ids, batch x block_size; or float32 features,
batch x input shape) and `logits` (float32: batch x block_size x vocab; batch x classes; batch x 1
for regression).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from scalelab.errors import UserError
from scalelab.tasks.base import Task

ONNX_TOLERANCE = 1e-3  # max abs logit difference an fp32 export must stay under
# A LoRA or IA3 merged into its base weights must reproduce the adapter model's logits to within
# this, both evaluated in float64 (`finetune.adapters.merge_diff`): the merged fp32 weights
# against the adapter's exact function. In float32 the two forward passes differ by rounding
# alone by up to ~1e-5 on real text's logits, which is not the merge's error.
MERGE_TOLERANCE = 1e-5
EXPORT_BATCH = 2  # batch of the traced example: >= 2, so the exporters keep the batch symbolic


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("ONNX export and int8 need the optional packages onnx, onnxscript and "
                        "onnxruntime: pip install 'scalelab[compress]'") from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters print progress and deprecation notes; keep the CLI's output ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def check_writable(path: Path) -> None:
    """UserError (one line naming `path`) unless a file can be written there: checked before
    an export, which otherwise fails only after seconds of tracing, and then in the exporter's
    words. An existing file is opened for appending (its content untouched); a new one is
    created and removed again."""
    if path.is_dir():
        raise UserError(f"{path} is a folder: give a file name in it")
    if not path.parent.is_dir():
        raise UserError(f"folder {path.parent} does not exist")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    if not existed:
        os.unlink(path)


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor) -> str:
    """Write `model` (fp32, CPU) as ONNX with a dynamic batch, traced on `example` (a batch of
    `task.example_input`, batch size >= 2 so the batch stays symbolic); returns the exporter used.
    A model neither exporter can write is a UserError (one line)."""
    require_onnx()
    path = Path(path)
    model = model.eval()
    args = (example.cpu(),)
    try:
        with quiet():
            torch.onnx.export(
                model, args, str(path), input_names=["idx"], output_names=["logits"],
                dynamo=True, external_data=False, verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            )
        return "dynamo"
    except Exception:  # noqa: BLE001 - any failure of the new exporter: try the old one
        try:
            with quiet():
                torch.onnx.export(
                    model, args, str(path), input_names=["idx"], output_names=["logits"],
                    dynamo=False, dynamic_axes={"idx": {0: "batch"}, "logits": {0: "batch"}},
                )
        except Exception as err:  # noqa: BLE001 - both exporters failed: the user's model
            raise UserError(f"ONNX export of this {type(model).__name__} failed with both "
                            f"exporters: {_one_line(err)}") from None
        return "torchscript"


# Session config keys that, set to "0", stop ONNX Runtime's pool threads spin-waiting for work.
ORT_NO_SPIN = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def ort_session(path: str | Path, spin: bool = False) -> Any:
    """An ONNX Runtime CPU session using as many threads as torch does now (fair latency), whose
    threads do not spin-wait: by default they keep spinning after each run (measured: ~8 ms of
    CPU burnt in the 20 ms after a run, none with spinning off), which takes the cores from
    whatever is timed next, the base rung's PyTorch latency included. `spin=True` keeps ONNX
    Runtime's default, for benchmarks/latency_stability.py's baseline only."""
    require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    for key in () if spin else ORT_NO_SPIN:
        opts.add_session_config_entry(key, "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ONNX tensor element types of the graph input -> the numpy dtype fed to the session.
_ORT_INPUT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32,
                     "tensor(float)": np.float32, "tensor(double)": np.float64}


class OrtModule(nn.Module):
    """An ONNX Runtime session behind the nn.Module call interface, so the measurement harness
    (`measure_model`: the task's evaluation, latency) runs it exactly as it runs a PyTorch model.
    CPU only. Inputs are converted to the graph input's type (int64 ids or float32 features).

    A session's thread count is fixed when it is made, so each call runs on a session with torch's
    thread count at the time of the call (made on first use): evaluation gets the process's
    threads, a latency timing the threads `train.measure.timing_threads` sets, the same as a
    PyTorch model timed beside it."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = str(path)
        self._sessions: dict[int, Any] = {}
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = _ORT_INPUT_DTYPES.get(graph_input.type, np.float32)

    @property
    def session(self) -> Any:
        """The session for torch's current thread count."""
        threads = torch.get_num_threads()
        if threads not in self._sessions:
            self._sessions[threads] = ort_session(self.path)
        return self._sessions[threads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = x.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        out = self.session.run(None, {self.input_name: feed})[0]
        return torch.from_numpy(out).to(x.device)


@torch.no_grad()
def max_abs_logit_diff(reference: nn.Module, candidate: nn.Module, task: Task,
                       batches: tuple[int, ...] = (1, 5)) -> float:
    """Largest absolute output difference over `task.example_input` at a few batch sizes."""
    reference = reference.eval()
    worst = 0.0
    for b in batches:
        x = task.example_input(b)
        ref = reference(x).float()
        got = candidate(x).float()
        worst = max(worst, (ref - got).abs().max().item())
    return worst


__all__ = ["EXPORT_BATCH", "MERGE_TOLERANCE", "ONNX_TOLERANCE", "OrtModule", "check_writable",
           "export_onnx", "max_abs_logit_diff", "ort_session", "quiet", "require_onnx"]
