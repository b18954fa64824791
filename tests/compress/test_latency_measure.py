"""Latency you can trust: ONNX Runtime sessions that do not spin-wait, and timed series whose
spread is too wide re-measured once and flagged (with a fake clock: no wall-clock assertion)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from scalelab import latency
from scalelab.train.measure import latency_ms

# The two ONNX Runtime session keys that, set to "0", stop its pool threads spin-waiting after a
# run (spelled out here, not imported, so the test reads the session's own configuration).
SPIN_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def _identity_onnx(path: Path) -> Path:
    """A one-node ONNX graph (float input -> Identity): enough for a session, no exporter run."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("idx", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["idx"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_ort_sessions_do_not_spin_and_use_torchs_threads(tmp_path):
    pytest.importorskip("onnxruntime")
    from scalelab.export import OrtModule

    module = OrtModule(_identity_onnx(tmp_path / "id.onnx"))
    opts = module.session.get_session_options()
    assert [opts.get_session_config_entry(k) for k in SPIN_KEYS] == ["0", "0"]
    assert opts.intra_op_num_threads == torch.get_num_threads()
    assert opts.inter_op_num_threads == 1
    x = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    assert torch.equal(module(x), x)  # the session still runs


class FakeClock:
    """A clock whose successive timed calls last the given durations (ms), in order; counts how
    often it was read."""

    def __init__(self, durations_ms: list[float]):
        self.reads = 0
        self._now = 0.0
        self._pending = iter(durations_ms)
        self._started = False

    def __call__(self) -> float:
        self.reads += 1
        if self._started:  # the end of a call: advance by its duration
            self._now += next(self._pending) / 1e3
        self._started = not self._started
        return self._now


STEADY = [2.0, 2.02, 1.98, 2.01, 2.0, 1.99, 2.03, 2.0]  # IQR ~1% of the median
# Half the calls stall for a scheduler tick or more: IQR far above 30% of the median.
STALLED = [0.1, 4.1, 0.1, 8.1, 0.1, 4.1, 0.1, 12.1]


def _measure(durations: list[float]) -> tuple[dict, FakeClock]:
    clock = FakeClock(durations)
    rec = latency_ms(nn.Identity(), torch.zeros(1, 4), torch.device("cpu"), repeats=8,
                     warmup=2, clock=clock)
    return rec, clock


def test_steady_series_is_measured_once_and_not_flagged():
    rec, clock = _measure(STEADY)
    assert clock.reads == 2 * 8  # one series of 8 calls, two clock reads each
    assert rec["median"] == pytest.approx(2.0) and rec["iqr"] < 0.1
    assert rec["remeasured"] is False and rec["unstable"] is False


def test_unstable_series_is_remeasured_and_flagged_when_still_unstable():
    rec, clock = _measure(STALLED + list(reversed(STALLED)) + STALLED)
    assert clock.reads == latency.MAX_SERIES * 2 * 8  # measured until the last series allowed
    assert rec["remeasured"] is True and rec["unstable"] is True
    assert latency.relative_iqr(rec) > latency.UNSTABLE_IQR
    assert latency.is_unstable(rec) and latency.unstable_batches({"32": rec}) == ["32"]


def test_unstable_series_replaced_by_a_steady_remeasurement():
    rec, clock = _measure(STALLED + STEADY)
    assert clock.reads == 2 * 2 * 8
    assert rec["remeasured"] is True and rec["unstable"] is False
    assert rec["median"] == pytest.approx(2.0)  # the steady series is the one kept


def test_a_third_series_is_taken_when_the_second_is_unstable_too():
    """Two series caught in slow spells, then a steady one: the steady one is kept and nothing
    more is timed after it."""
    rec, clock = _measure(STALLED + list(reversed(STALLED)) + STEADY)
    assert clock.reads == 3 * 2 * 8
    assert rec["remeasured"] is True and rec["unstable"] is False
    assert rec["median"] == pytest.approx(2.0)


def test_records_without_a_flag_are_judged_by_the_same_rule():
    """Studies measured before the flag existed: a stored IQR of 250 ms on a 1 ms median is
    flagged when read; an explicit flag is kept as recorded; a bare number has no spread."""
    assert latency.is_unstable({"median": 1.0, "iqr": 250.0})
    assert not latency.is_unstable({"median": 1.0, "iqr": 0.1})
    assert not latency.is_unstable({"median": 1.0, "iqr": 250.0, "unstable": False})
    assert not latency.is_unstable(148.0)


def test_flat_form_carries_medians_spread_and_flags():
    lat = {"1": {"median": 0.5, "iqr": 0.01, "unstable": False},
           "32": {"median": 148.0, "iqr": 250.0, "unstable": True}}
    flat = latency.flat(lat, "base_")
    assert flat == {"base_latency_ms": {"1": 0.5, "32": 148.0},
                    "base_latency_iqr_ms": {"1": 0.01, "32": 250.0},
                    "base_latency_unstable": ["32"]}
    assert latency.flagged(flat, 32, "base_") and not latency.flagged(flat, "1", "base_")
    # A store row (entries with their flag) reads the same as summary.json's flat form.
    assert latency.flagged({"latency_ms": lat}, "32") and latency.flagged(
        {"latency_ms": latency.medians(lat), "latency_unstable": ["32"]}, "32")


def test_speedup_is_the_ratio_of_the_medians():
    base = {"1": {"median": 3.0, "iqr": 0.1}, "32": 24.0}
    new = {"1": 1.5, "32": {"median": 2.0, "iqr": 0.1}, "8": 1.0}
    assert latency.speedups(base, new) == {"1": 2.0, "32": 12.0}


@pytest.mark.parametrize("repeats", [3, 30])
def test_real_model_latency_record_has_its_spread_and_flags(repeats):
    """The real clock on a real model: whatever the load, the record says how it was taken."""
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    rec = latency_ms(model, torch.zeros(2, 16), torch.device("cpu"), repeats=repeats)
    assert set(rec) == {"median", "iqr", "repeats", "threads", "remeasured", "unstable"}
    assert rec["median"] > 0 and rec["iqr"] >= 0 and rec["repeats"] == repeats
    assert rec["unstable"] == (latency.relative_iqr(rec) > latency.UNSTABLE_IQR)
    assert rec["unstable"] <= rec["remeasured"]  # only a re-measured series can be flagged

