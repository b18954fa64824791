"""ONNX export of a rung or a variant, checked with ONNX Runtime against the PyTorch logits.

Exporter decision: torch 2.13's `torch.onnx.export` defaults to the torch.export-based ("dynamo")
exporter, which needs `onnxscript`; the TorchScript exporter (`dynamo=False`) still works but is
deprecated. We use the dynamo exporter with a dynamic batch dimension (the sequence length is
fixed at the model's block size) and fall back to the TorchScript one only when it fails, saying
which one wrote the file. On this machine both reproduce the PyTorch logits to about 3e-7 (fp32);
the dynamo exporter takes a few seconds per model, the TorchScript one well under a second.

The graph has one input, `idx` (int64, batch x block_size), and one output, `logits`
(float32, batch x block_size x vocab).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from scalelab.errors import UserError

ONNX_TOLERANCE = 1e-3  # max abs logit difference an fp32 export must stay under


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("ONNX export and int8 need the optional packages onnx, onnxscript and "
                        "onnxruntime: pip install 'scalelab[compress]'") from None


@contextlib.contextmanager
def _quiet():
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


def export_onnx(model: nn.Module, path: str | Path, block_size: int, vocab_size: int) -> str:
    """Write `model` (fp32, CPU) as ONNX with a dynamic batch; returns the exporter used."""
    _require_onnx()
    path = Path(path)
    model = model.eval()
    example = (torch.randint(0, vocab_size, (2, block_size)),)
    try:
        with _quiet():
            torch.onnx.export(
                model, example, str(path), input_names=["idx"], output_names=["logits"],
                dynamo=True, external_data=False, verbose=False,
                dynamic_shapes={"idx": {0: torch.export.Dim("batch", min=1, max=65536)}},
            )
        return "dynamo"
    except Exception:  # noqa: BLE001 - any failure of the new exporter: try the old one
        with _quiet():
            torch.onnx.export(
                model, example, str(path), input_names=["idx"], output_names=["logits"],
                dynamo=False, dynamic_axes={"idx": {0: "batch"}, "logits": {0: "batch"}},
            )
        return "torchscript"


def ort_session(path: str | Path):
    """An ONNX Runtime CPU session using as many threads as torch does (fair latency)."""
    _require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OrtModule(nn.Module):
    """An ONNX Runtime session behind the nn.Module call interface, so the measurement harness
    (eval_loss, latency_ms) runs it exactly as it runs a PyTorch model. CPU only."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = str(path)
        self.session = ort_session(path)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = idx.detach().cpu().numpy().astype(np.int64, copy=False)
        out = self.session.run(None, {self.input_name: x})[0]
        return torch.from_numpy(out).to(idx.device)


@torch.no_grad()
def max_abs_logit_diff(reference: nn.Module, candidate: nn.Module, block_size: int,
                       vocab_size: int, batches: tuple[int, ...] = (1, 5), seed: int = 0) -> float:
    """Largest absolute logit difference over fixed random inputs of a few batch sizes."""
    reference = reference.eval()
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batches:
        x = torch.randint(0, vocab_size, (b, block_size), generator=gen)
        ref = reference(x).float()
        got = candidate(x).float()
        worst = max(worst, (ref - got).abs().max().item())
    return worst
