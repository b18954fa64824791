"""Quantization variants: int8 dynamic quantization for CPU inference, fp16/bf16 weight casts.
Both apply to every family (int8 to every model the ONNX exporters can write; one that cannot is
a one-line UserError when its variant is made).

int8 decision: ONNX Runtime's `quantize_dynamic`, not torchao. Measured with
`benchmarks/int8_backends.py --threads 1` on this machine (shared x86_64 CPU, torch 2.13.0+cpu,
torchao 0.18.0, onnxruntime 1.32.0) on a 1.0e6-non-embedding GPT (4 x 144, block 64); forward
latency median in ms at batch 1 / batch 32, and bytes of the saved file:

    PyTorch fp32                                    4.2 /  88    4,201,312 (safetensors)
    torchao Int8DynamicActivationInt8WeightConfig   7.9 / 123    1,264,935 (torch.save)
    torchao Int8WeightOnlyConfig                    3.8 / 109    1,264,231 (torch.save)
    ONNX Runtime fp32 (same graph)                  2.0 /  65    4,382,342 (.onnx)
    ONNX Runtime quantize_dynamic int8 (QInt8)      1.6 /  43    1,250,846 (.onnx)

torchao's int8 paths are slower than fp32 here (its fast kernels target GPUs and torch.compile)
and its tensor subclasses cannot go into safetensors; ORT's MatMulInteger kernels are real int8
CPU kernels, and the quantized .onnx file is the deployable artifact itself. Because part of ORT's
speed comes from the runtime rather than from int8, every int8 variant also records the latency
of the fp32 ONNX graph under the same runtime (`extra.fp32_onnxruntime_latency_ms`, medians; their
IQRs and flags beside them, `scalelab.latency.flat`; `extra.speedup_vs_fp32_onnxruntime`), so the
two effects can be told apart. Sessions do not spin-wait (`export.ort_session`). The logits of an
fp32 export match PyTorch to ~1e-6; int8 moves them by ~0.03 and the validation loss by ~3e-4.

Size: bytes of the saved file (the quantized .onnx; for casts the .safetensors of cast weights).
The issue's criterion "at least 3.5x smaller than fp32 for the Linear weights" is measured
directly on the quantized graph: the int8 weight tensors feeding MatMulInteger (every Linear of
the blocks) plus their scales and zero points, against the same weights' fp32 bytes
(`extra.linear_weight_ratio`, ~4.0). The tied embedding/output-head matrix is not a
MatMulInteger weight (ORT stores it int8 for the embedding Gather); `extra.linear_weight_numel`
and `extra.torch_linear_weight_numel` show what the ratio covers. For other families the same
figures cover every weight ORT quantized into an integer kernel: MatMulInteger (Linear layers; the
2-D Gemm an MLP exports to is quantized into MatMulInteger too) and ConvInteger (a CNN's
convolutions); `torch_linear_weight_numel` counts the Linear and Conv weights of the PyTorch model.

Inputs: the exported graph is traced on `task.example_input(EXPORT_BATCH)` (token ids, or float32
features for vector and image tasks); int8 needs no calibration data (activations are quantized
at run time).

Casts on float inputs: a model cast to fp16/bf16 gets float32 images or vectors from the task;
the variant runs as `CastInputs(model)`, which casts floating inputs to the weights' dtype at the
entry (token ids pass unchanged). Only the weights are saved, so the file is the cast model's.

Casts on a CPU without a oneDNN kernel for their dtype (`cpu_kernel`; fp16 needs AVX512-FP16 or
AMX-FP16, which many x86 CPUs lack) run PyTorch's generic matmul, which converts every element to
fp32: measured on a 2-core AMD EPYC (AVX-512 and AVX512-BF16, no AVX512-FP16) with a 99,690-
parameter MLP at 1 thread, fp16 took 0.65 ms at batch 32 against fp32's 0.15 and bf16's 0.18. In
three `compress` runs on the idle machine its batch-32 latency came out 0.98, 0.65 and 0.95 ms
(the base rung's, timed right before, 0.151, 0.152 and 0.256); in 15 rounds on the loaded machine
(load average 2.4) fp16's series medians spread 1.32x (slow spells to 0.85 ms) against 1.06x for
fp32 and bf16 series timed between them. The spells (the thread's own CPU time per call up 1.2-2x
for ~50-100 ms) slow all three dtypes when their calls alternate one by one; fp16's series, 4x
longer, are caught far more often. Such a variant's note says so, and fp16 is not among the
default methods (`Fp16.defaults`); bf16, the dtype CUDA training autocasts to, is the default half
precision.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model

from scalelab import latency
from scalelab.compress.base import (
    Built,
    CompressMethod,
    Context,
    Method,
    Style,
    latency_cell,
)
from scalelab.export import EXPORT_BATCH, OrtModule, export_onnx, quiet, require_onnx
from scalelab.models.base import Family
from scalelab.train.checkpoint import save_weights
from scalelab.train.measure import latencies
from scalelab.values import fmt_spec

CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
INTEGER_OPS = ("MatMulInteger", "ConvInteger")  # ORT's dynamic-quantized weight kernels


class CastInputs(nn.Module):
    """`model` (cast to a low-precision dtype) called on inputs cast to that dtype when they are
    floating point; integer inputs (token ids) pass unchanged."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype) if x.is_floating_point() else x)


def cpu_kernel(kind: str) -> bool:
    """Whether PyTorch has a oneDNN matmul kernel for `kind` (fp16/bf16) on this CPU; without
    one the matmul converts every element to fp32 (see the module docstring)."""
    name = {"fp16": "_is_mkldnn_fp16_supported", "bf16": "_is_mkldnn_bf16_supported"}[kind]
    try:
        return bool(getattr(torch.ops.mkldnn, name)())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN: the generic kernel
        return False


def cast_note(kind: str, device: torch.device) -> str:
    """The variant's note: its dtype, and on a CPU without a kernel for it, what that means."""
    note = f"weights stored and computed in {kind}"
    if device.type == "cpu" and not cpu_kernel(kind):
        note += (f"; this CPU has no {kind} matmul kernel (PyTorch converts every element to "
                 "fp32): slower than fp32, and its latency varies between runs")
    return note


def cast(model: nn.Module, kind: str, path: Path) -> tuple[nn.Module, int]:
    """A copy with every parameter cast to fp16/bf16 (stored and computed in it), saved to
    `path`; returns (the cast model, bytes of the file)."""
    model = copy.deepcopy(model).to(CAST_DTYPES[kind])
    return model, save_weights(model, path)


def linear_weight_bytes(onnx_path: Path) -> dict:
    """Bytes of the integer-kernel weights (MatMulInteger, ConvInteger) in a dynamically
    quantized graph vs their fp32 size."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: i for i in graph.initializer}
    q_bytes, fp32_bytes, numel, n = 0, 0, 0, 0
    for node in graph.node:
        if node.op_type not in INTEGER_OPS or node.input[1] not in inits:
            continue
        w_name = node.input[1]
        w = numpy_helper.to_array(inits[w_name])
        base = w_name.removesuffix("_quantized")
        extra = sum(numpy_helper.to_array(inits[k]).nbytes
                    for k in (base + "_scale", base + "_zero_point") if k in inits)
        q_bytes += w.nbytes + extra
        fp32_bytes += w.size * 4
        numel += w.size
        n += 1
    return {"linear_weights": n, "linear_weight_numel": numel,
            "linear_weight_bytes_fp32": fp32_bytes, "linear_weight_bytes_int8": q_bytes,
            "linear_weight_ratio": fp32_bytes / q_bytes if q_bytes else None}


def int8_dynamic(model: nn.Module, example: torch.Tensor,
                 path: Path) -> tuple[OrtModule, OrtModule, int, dict]:
    """Export fp32 ONNX traced on `example`, quantize it with ORT's quantize_dynamic (int8
    weights, per tensor, activations quantized at run time); returns (int8 module, fp32 ONNX
    module, bytes, extra)."""
    require_onnx()
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path = path.with_name(path.stem + "-fp32.onnx")
    exporter = export_onnx(copy.deepcopy(model).float().cpu(), fp32_path, example)
    with quiet():  # also hides ORT's "consider pre-processing" notice
        quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8)
    extra = {
        "runtime": f"onnxruntime {onnxruntime.__version__} (CPU)",
        "exporter": exporter,
        "weight_type": "int8 per tensor (QInt8), activations quantized dynamically",
        "fp32_onnx_bytes": fp32_path.stat().st_size,
        **linear_weight_bytes(path),
        "torch_linear_weight_numel": sum(int(m.weight.numel()) for m in model.modules()
                                         if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)),
    }
    return OrtModule(path), OrtModule(fp32_path), path.stat().st_size, extra


class Int8(CompressMethod):
    """`int8`: ONNX Runtime dynamic quantization; any family (see the module docstring)."""

    kind = "int8"
    summary = "dynamic int8 quantization for CPU inference (ONNX Runtime); any family"
    defaults = ("int8",)
    style = Style("#d95f02", "s")
    section_note = ("int8 runs in ONNX Runtime, so its table row also gives the same graph's "
                    "fp32 latency in that runtime.")
    restored_note = "int8 quantization error"

    def describe(self, method: Method) -> str:
        return ("int8 weights (per tensor), activations quantized at run time, run by ONNX "
                "Runtime on the CPU")

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        path = ctx.file(name, ".onnx")
        q, fp32, nbytes, extra = int8_dynamic(ctx.base, ctx.task.example_input(EXPORT_BATCH),
                                              path)
        cpu = torch.device("cpu")
        m = ctx.spec.measure
        # The same graph in fp32 under the same runtime: tells the int8 effect from ORT's own.
        fp32_lat = latencies(fp32, ctx.task, cpu, m.latency_batches, m.latency_repeats)
        Path(fp32.path).unlink(missing_ok=True)
        extra.update(latency.flat(fp32_lat, "fp32_onnxruntime_"))  # medians, IQRs, flags
        return Built(q, path, nbytes, int(ctx.row["n_params"]), int(ctx.row["n_nonembed"]),
                     settings={"weight_type": "QInt8", "per_channel": False}, extra=extra,
                     device=cpu)

    def after_measure(self, built: Built, measured: dict) -> dict:
        return {"speedup_vs_fp32_onnxruntime": latency.speedups(
            built.extra["fp32_onnxruntime_latency_ms"], measured["latency_ms"])}

    def notes(self, variant: Mapping[str, Any], batch: str, unit: str) -> str:
        """The Linear weights' size ratio, and the fp32 graph's latency under ONNX Runtime with
        the int8 speedup over it, computed from the medians shown."""
        ex = variant.get("extra") or {}
        fp32 = latency.medians(ex.get("fp32_onnxruntime_latency_ms"))
        own = latency.speedups(fp32, variant.get("latency_ms"))
        prefix = "fp32_onnxruntime_"
        return (f"ONNX Runtime, int8 weights; Linear weights "
                f"{fmt_spec(ex.get('linear_weight_ratio'), '.2f', 'x')} smaller than fp32; "
                f"same graph in fp32 under ONNX Runtime: "
                f"{latency_cell(fp32, ex, '1', prefix)} / {latency_cell(fp32, ex, batch, prefix)}"
                f" ms (b1 / b{batch}), int8 over it {fmt_spec(own.get('1'), '.2f', '×')} / "
                f"{fmt_spec(own.get(batch), '.2f', '×')}")

    def restore(self, family: Family, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        return OrtModule(path)


class Cast(CompressMethod):
    """`fp16` / `bf16`: every weight cast to that dtype; any family."""

    summary = "every weight cast to that dtype (stored and computed in it); any family"

    @property
    def restored_note(self) -> str:  # type: ignore[override]
        return f"its {self.kind} weights run in fp32"

    def describe(self, method: Method) -> str:
        return f"every weight stored and computed in {self.kind}"

    def make(self, ctx: Context, method: Method, name: str) -> Built:
        path = ctx.file(name)
        model, nbytes = cast(ctx.base, self.kind, path)
        n, ne = ctx.counts(model)
        return Built(CastInputs(model, CAST_DTYPES[self.kind]), path, nbytes, n, ne,
                     settings={"dtype": self.kind},
                     extra={"note": cast_note(self.kind, ctx.device)})

    def restore(self, family: Family, shape: dict, variant: Mapping[str, Any],
                path: Path) -> nn.Module:
        """The cast weights, back in fp32 (what export and comparisons need)."""
        model = family.build(shape).to(CAST_DTYPES[self.kind])
        load_model(model, str(path))
        return model.float().eval()


class Fp16(Cast):
    """`fp16`: asked for by name only (not in the default list): most CPUs have no fp16 matmul
    kernel, so on them it is slower than fp32 and its latency is not steady (module docstring)."""

    kind = "fp16"
    style = Style("#7570b3", "^")


class Bf16(Cast):
    """`bf16`: the default half precision (the dtype CUDA training autocasts to)."""

    kind = "bf16"
    defaults = ("bf16",)
    style = Style("#a6761d", "v")


__all__ = ["CAST_DTYPES", "Bf16", "Cast", "CastInputs", "Fp16", "Int8", "cast", "cast_note",
           "cpu_kernel", "int8_dynamic", "linear_weight_bytes"]
