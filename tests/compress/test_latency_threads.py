"""CPU latency is timed on `LATENCY_THREADS` threads, PyTorch's and ONNX Runtime's alike, and the
process's own thread count (training's) is restored after every timing; fp16, which most CPUs
have no kernel for, is no default method and says so where it is made."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn

from scalelab.compress import quantize
from scalelab.compress.methods import default_methods
from scalelab.compress.plan import plan_compress
from scalelab.train import measure

CPU = torch.device("cpu")
PROCESS_THREADS = 2  # what training would run on; differs from LATENCY_THREADS (1)


@pytest.fixture
def process_threads() -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(PROCESS_THREADS)
    yield PROCESS_THREADS
    torch.set_num_threads(before)


class ThreadSpy(nn.Module):
    """Records torch's thread count at every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return x


def test_cpu_latency_runs_on_latency_threads_and_restores_the_process_count(process_threads):
    assert measure.LATENCY_THREADS != process_threads  # else the test shows nothing
    spy = ThreadSpy()
    rec = measure.latency_ms(spy, torch.zeros(2, 4), CPU, repeats=4, warmup=2)
    assert spy.seen and set(spy.seen) == {measure.LATENCY_THREADS}
    assert rec["threads"] == measure.LATENCY_THREADS
    assert torch.get_num_threads() == process_threads  # training keeps its threads


def test_thread_count_is_restored_when_the_timed_model_fails(process_threads):
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        measure.latency_ms(Broken(), torch.zeros(1, 4), CPU, repeats=3, warmup=1)
    assert torch.get_num_threads() == process_threads


def test_cuda_timing_keeps_the_process_thread_count(process_threads):
    with measure.timing_threads(torch.device("cuda")):
        assert torch.get_num_threads() == process_threads


def test_ort_module_runs_on_torchs_thread_count_at_call_time(tmp_path, process_threads):
    """An int8 variant's session is made while the process runs on its own threads; timed, it
    must run on the latency threads like the PyTorch base rung timed beside it."""
    pytest.importorskip("onnxruntime")
    from scalelab.export import OrtModule
    from tests.compress.test_latency_measure import _identity_onnx

    module = OrtModule(_identity_onnx(tmp_path / "id.onnx"))
    assert module.session.get_session_options().intra_op_num_threads == process_threads
    x = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    with measure.timing_threads(CPU):
        timed = module.session.get_session_options().intra_op_num_threads
        assert torch.equal(module(x), x)
    assert timed == measure.LATENCY_THREADS
    assert module.session.get_session_options().intra_op_num_threads == process_threads


def test_fp16_is_not_a_default_method_and_bf16_is():
    assert "fp16" not in default_methods() and "bf16" in default_methods()
    rows = [{"rung": i, "status": "done", "checkpoint": f"c{i}", "n_params": 10 * (i + 1),
             "n_nonembed": 10 * (i + 1)}
            for i in range(2)]
    kinds = [m.kind for m in plan_compress(rows, "largest", None, "mlp", "classification").methods]
    assert "fp16" not in kinds and "bf16" in kinds


@pytest.mark.parametrize("has_kernel", [True, False])
def test_cast_note_says_when_the_cpu_has_no_kernel(monkeypatch, has_kernel):
    monkeypatch.setattr(quantize, "cpu_kernel", lambda kind: has_kernel)
    note = quantize.cast_note("fp16", CPU)
    assert note.startswith("weights stored and computed in fp16")
    assert ("no fp16 matmul kernel" in note) is not has_kernel
    assert "kernel" not in quantize.cast_note("fp16", torch.device("cuda"))  # CUDA has one
