"""Measurements by the rules of docs/method.md ("Definitions"): validation loss, FLOPs, machine
peak, latency, memory, bytes.

Every function takes a model and plain settings and returns plain numbers, so rungs and compressed
variants are measured by the same code.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from scalelab import latency
from scalelab.errors import UserError
from scalelab.tasks.base import Task

# Dense peak throughput published by vendors, in FLOP/s, for the dtype our trainer uses on each
# device (bf16 autocast on CUDA). CPUs have no single published number: None.
VENDOR_PEAK_BF16 = {
    "H100 80GB HBM3": 989e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10": 125e12,
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def machine_info(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["machine"] = f"{info['gpu']} (+ {os.cpu_count()} CPU cores)"
    return info


def vendor_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in VENDOR_PEAK_BF16.items():
        if key in name:
            return peak
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak_flops(device: torch.device, n: int | None = None, seconds: float = 1.0) -> float:
    """Measured GEMM throughput (FLOP/s) in the dtype training computes in on this device.

    Square matmuls of size n; 2·n³ FLOPs each; best of several timed bursts (the peak is what
    the machine can do, so the best burst is the right statistic here).
    """
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        reps = 5
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        dt = time.perf_counter() - t0
        best = max(best, reps * 2 * n**3 / dt)
    return best


def train_step_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward+backward of the batch x, counted by torch.utils.flop_counter (2 per
    multiply-add). The backward starts from the sum of the outputs: the loss's own arithmetic is
    not a matmul, so the count is that of a real training step."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _timed_calls(call: Callable[[], Any], device: torch.device, repeats: int,
                 clock: Callable[[], float]) -> list[float]:
    """`repeats` timed calls of `call` in ms, each synchronised with the device."""
    times = []
    for _ in range(repeats):
        t0 = clock()
        call()
        _sync(device)
        times.append((clock() - t0) * 1e3)
    return times


# CPU latency is timed on this many threads (torch's, and so ONNX Runtime's: `export.OrtModule`
# runs on torch's count at call time), set around each timing and restored after it, so training
# keeps its own count. Why one, measured with benchmarks/latency_stability.py on an idle 2-core
# machine (benchmarks/RESULTS.md): at 2 threads the same variants' speedups moved by up to 2.3x
# between three `compress` runs, and PyTorch series of the same model had medians of 0.13 or
# 0.25 ms (an OpenMP barrier waiting for its second thread); at 1 thread int8 and pruning agreed
# within 2%. Models this small gain little from a second thread, and one thread is what a
# server running one request per core gets.
LATENCY_THREADS = 1


@contextmanager
def timing_threads(device: torch.device) -> Iterator[None]:
    """Torch's thread count set to `LATENCY_THREADS` for a CPU timing and restored after it
    (a CUDA timing keeps the process's count: its host thread only launches kernels)."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(LATENCY_THREADS)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _busy_calls(call: Callable[[], Any], device: torch.device, repeats: int,
                clock: Callable[[], float]) -> list[list[float]]:
    """Timed calls of `call` in ms, back to back until at least `repeats` of them and
    `latency.min_span_s(repeats)` seconds have passed, as `latency.subseries_count(repeats)`
    consecutive sub-series (the reason for the rule is in `scalelab.latency`)."""
    times: list[float] = []
    end = clock() + latency.min_span_s(repeats)
    while len(times) < repeats or clock() < end:
        times.extend(_timed_calls(call, device, 1, clock))
    return latency.split(times, latency.subseries_count(repeats))


@torch.no_grad()
def latency_ms(model: nn.Module, x: torch.Tensor, device: torch.device, repeats: int = 30,
               warmup: int = 5, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Forward latency of the batch x, in ms: after warm-up, calls back to back for at least
    `repeats` calls and `latency.min_span_s(repeats)` seconds, split into sub-series
    (`latency.subseries_count`); the latency is the median of the fastest sub-series, with that
    sub-series' IQR (`latency.fastest`; `calls` and `subseries` record how many). On the CPU it
    runs on `LATENCY_THREADS` threads (`threads` records the count). A measurement whose kept
    sub-series has an IQR large against its median (`latency.UNSTABLE_IQR`) is taken again, up
    to `latency.MAX_SERIES` in all, until one is steady; the steadiest is kept, and flagged
    `unstable` when it is still over the line (`remeasured` says more than one was taken). The
    reasons for each rule, with their measurements, are in `scalelab.latency`. `clock` (seconds,
    monotonic): tests pass a fake one."""
    was_training = model.training
    model.eval()
    x = x.to(device)
    with timing_threads(device):
        threads = torch.get_num_threads()
        for _ in range(warmup):
            model(x)
        _sync(device)

        def measure_once() -> tuple[dict[str, float], int]:
            subseries = _busy_calls(lambda: model(x), device, repeats, clock)
            return latency.fastest(subseries), sum(map(len, subseries))

        taken = [measure_once()]
        while (latency.relative_iqr(taken[-1][0]) > latency.UNSTABLE_IQR
               and len(taken) < latency.MAX_SERIES):
            taken.append(measure_once())
    model.train(was_training)
    kept, calls = min(taken, key=lambda t: latency.relative_iqr(t[0]))
    return {**kept, "repeats": repeats, "calls": calls,
            "subseries": latency.subseries_count(repeats), "threads": threads,
            "remeasured": len(taken) > 1,
            "unstable": latency.relative_iqr(kept) > latency.UNSTABLE_IQR}


def latencies(model: nn.Module, task: Task, device: torch.device, batches: list[int],
              repeats: int) -> dict[str, dict]:
    """Latency at each batch size, on the task's example inputs; keys are the batch sizes."""
    return {str(b): latency_ms(model, task.example_input(b), device, repeats) for b in batches}


# Latency dicts, one way: the arithmetic on them (medians, speedups, the unstable flag, the
# flat form of summary.json) lives in `scalelab.latency`, which the report reads without torch;
# `medians` and `speedups` are its functions, named here for the callers that measure.
medians = latency.medians
speedups = latency.speedups


def measure_model(model: nn.Module, task: Task, device: torch.device, eval_units: int,
                  latency_batches: list[int], latency_repeats: int, precision: str,
                  train_loss: bool = False) -> dict:
    """The quality and inference cost of a model, the same for rungs and variants: validation
    loss and the task's metrics on the fixed final windows (under the study's `precision`,
    the autocast rule it trains with), optionally the loss on as many
    training units (the generalisation gap), latency at each batch size, and the peak memory
    over all of it."""
    with PeakMemory(device) as mem:
        ev = task.evaluate(model, device, eval_units, "val", precision)
        out: dict = {"val_loss": ev.pop("loss"), "metrics": ev}
        if train_loss:
            out["train_loss"] = task.evaluate(model, device, eval_units, "train", precision)["loss"]
        out["latency_ms"] = latencies(model, task, device, latency_batches, latency_repeats)
    out["peak_mem_bytes"] = mem.peak_bytes
    return out


class EnergyMeter:
    """The device's energy over a block of work, in joules, from NVML's total-energy counter
    (`nvidia-ml-py`; Volta and later report it). `joules` stays None on CPU, without the
    package, or where the device reports no counter: no number rather than a guessed one."""

    def __init__(self, device: torch.device):
        self.device = device
        self.joules: float | None = None
        self._handle = None
        self._start_mj: int | None = None

    def __enter__(self) -> EnergyMeter:
        if self.device.type != "cuda":
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            index = self.device.index if self.device.index is not None else 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception:  # no package, no driver, or no counter on this device: no number
            self._handle = None
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is None or self._start_mj is None:
            return
        import pynvml

        try:
            end_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception:
            return
        self.joules = (end_mj - self._start_mj) / 1e3


class PeakMemory:
    """Peak memory over a block of work.

    CUDA: torch's peak allocated bytes. CPU: the process's peak resident set (Linux VmHWM), whose
    high-water mark we reset at the start through /proc/self/clear_refs; where that is not
    possible, the lifetime peak (ru_maxrss) is reported instead. CPU numbers therefore include
    the interpreter, torch and the corpus, which is what a user's process would really need.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak_bytes = _vm_hwm_bytes()


def _vm_hwm_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def file_bytes(path: str | Path) -> int:
    return Path(path).stat().st_size
