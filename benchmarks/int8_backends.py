"""int8 dynamic quantization on CPU: torchao's current API vs ONNX Runtime's quantize_dynamic.

The measurement behind the choice documented in `scalelab.compress.quantize`. It builds a GPT of
the default ladder's largest shape (random weights: latency and size do not depend on training),
and times PyTorch fp32, torchao Int8DynamicActivationInt8Weight / Int8WeightOnly, ONNX Runtime
fp32 and ONNX Runtime int8 with the study harness (`scalelab.train.measure.latency_ms`), at the
same thread count. Sizes are bytes of the saved file of each.

    .venv/bin/python benchmarks/int8_backends.py --threads 1 --json /tmp/int8.json

torchao is not a scalelab dependency; install it to include its rows (`pip install torchao`).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import tempfile
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nonembed", type=float, default=1e6, help="model size (non-embedding)")
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from scalelab.export import max_abs_logit_diff
    from scalelab.models import gpt
    from scalelab.tasks import get_task
    from scalelab.train.measure import latency_ms

    cfg = gpt.shape_for(args.nonembed, block_size=args.block_size)
    task = get_task("pycode", context=args.block_size)
    torch.manual_seed(0)
    model = gpt.build(cfg).eval()
    cpu = torch.device("cpu")
    rows = []

    def row(name: str, m: torch.nn.Module, nbytes: int | None) -> None:
        lat = {b: latency_ms(m, task.example_input(b), cpu, repeats=args.repeats)["median"]
               for b in (1, 32)}
        diff = max_abs_logit_diff(model, m, task)
        rows.append({"backend": name, "bytes": nbytes, "latency_ms_b1": lat[1],
                     "latency_ms_b32": lat[32], "max_abs_logit_diff": diff})
        print(f"{name:34s} bytes {nbytes or 0:>10,}  b1 {lat[1]:8.3f} ms  b32 {lat[32]:9.3f} ms"
              f"  max|dlogit| {diff:.3g}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import save_model

        fp32_st = Path(tmp) / "m.safetensors"
        save_model(model, str(fp32_st))
        row("pytorch fp32", model, fp32_st.stat().st_size)
        try:
            from torchao.quantization import (
                Int8DynamicActivationInt8WeightConfig,
                Int8WeightOnlyConfig,
                quantize_,
            )

            for name, conf in (("torchao int8 dynamic act+weight",
                                Int8DynamicActivationInt8WeightConfig()),
                               ("torchao int8 weight-only", Int8WeightOnlyConfig())):
                q = copy.deepcopy(model)
                quantize_(q, conf, filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear)
                          and fqn.startswith("blocks"))
                buf = io.BytesIO()
                torch.save(q.state_dict(), buf)
                row(name, q, len(buf.getvalue()))
        except ImportError:
            print("torchao not installed: its rows are skipped")

        from scalelab.compress.quantize import int8_dynamic

        q, fp32, nbytes, extra = int8_dynamic(model, task.example_input(2), Path(tmp) / "q.onnx")
        row("onnxruntime fp32", fp32, extra["fp32_onnx_bytes"])
        row("onnxruntime int8 (quantize_dynamic)", q, nbytes)
        print(f"int8 Linear weights: {extra['linear_weight_ratio']:.2f}x smaller than fp32")
    meta = {"shape": cfg.to_dict(), "threads": args.threads, "torch": torch.__version__}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
