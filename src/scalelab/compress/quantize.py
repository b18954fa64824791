"""Quantization variants: int8 dynamic quantization for CPU inference, fp16/bf16 weight casts.

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
of the fp32 ONNX graph under the same runtime (`extra.fp32_onnxruntime_latency_ms`,
`extra.speedup_vs_fp32_onnxruntime`), so the two effects can be told apart. The logits of an
fp32 export match PyTorch to ~1e-6; int8 moves them by ~0.03 and the validation loss by ~3e-4.

Size: bytes of the saved file (the quantized .onnx; for casts the .safetensors of cast weights).
The issue's criterion "at least 3.5x smaller than fp32 for the Linear weights" is measured
directly on the quantized graph: the int8 weight tensors feeding MatMulInteger (every Linear of
the blocks) plus their scales and zero points, against the same weights' fp32 bytes
(`extra.linear_weight_ratio`, ~4.0). The tied embedding/output-head matrix is not a
MatMulInteger weight (ORT stores it int8 for the embedding Gather); `extra.linear_weight_numel`
and `extra.torch_linear_weight_numel` show what the ratio covers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_model

from scalelab.export import OrtModule, _quiet, _require_onnx, export_onnx

CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def cast(model: nn.Module, kind: str, path: Path) -> tuple[nn.Module, int]:
    """Every parameter cast to fp16/bf16 (stored and computed in it); returns (model, bytes)."""
    model = model.to(CAST_DTYPES[kind])
    save_model(model, str(path))
    return model, path.stat().st_size


def linear_weight_bytes(onnx_path: Path) -> dict:
    """Bytes of the Linear weights in a dynamically quantized graph vs their fp32 size."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: i for i in graph.initializer}
    q_bytes, fp32_bytes, numel, n = 0, 0, 0, 0
    for node in graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in inits:
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


def int8_dynamic(model: nn.Module, block_size: int, vocab_size: int,
                 path: Path) -> tuple[OrtModule, OrtModule, int, dict]:
    """Export fp32 ONNX, quantize it with ORT's quantize_dynamic (int8 weights, per tensor,
    activations quantized at run time); returns (int8 module, fp32 ONNX module, bytes, extra)."""
    _require_onnx()
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path = path.with_name(path.stem + "-fp32.onnx")
    exporter = export_onnx(copy.deepcopy(model).float().cpu(), fp32_path, block_size,
                           vocab_size)
    with _quiet():  # also hides ORT's "consider pre-processing" notice
        quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8)
    extra = {
        "runtime": f"onnxruntime {onnxruntime.__version__} (CPU)",
        "exporter": exporter,
        "weight_type": "int8 per tensor (QInt8), activations quantized dynamically",
        "fp32_onnx_bytes": fp32_path.stat().st_size,
        **linear_weight_bytes(path),
        "torch_linear_weight_numel": sum(int(m.weight.numel()) for m in model.modules()
                                         if isinstance(m, nn.Linear)),
    }
    return OrtModule(path), OrtModule(fp32_path), path.stat().st_size, extra


__all__ = ["CAST_DTYPES", "cast", "int8_dynamic", "linear_weight_bytes"]
