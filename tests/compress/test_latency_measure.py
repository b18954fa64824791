"""Latency you can trust: ONNX Runtime sessions that do not spin-wait, calls back to back over a
span of time split into sub-series whose fastest is the latency, and measurements whose spread is
too wide taken again and flagged (with a fake clock: no wall-clock assertion)."""

from __future__ import annotations

from collections.abc import Callable
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


class FakeTime:
    """A fake clock, and a model (`model`) whose calls advance it: call i (warm-up calls
    counted) starting at `now` seconds lasts `duration(i, now)` ms. Records when each call
    started."""

    def __init__(self, duration: Callable[[int, float], float]):
        self.now = 0.0
        self.duration = duration
        self.calls: list[float] = []
        fake = self

        class Timed(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                fake.calls.append(fake.now)
                fake.now += fake.duration(len(fake.calls) - 1, fake.now) / 1e3
                return x

        self.model = Timed()

    def clock(self) -> float:
        return self.now

    def measure(self, repeats: int, warmup: int) -> dict:
        return latency_ms(self.model, torch.zeros(1, 4), torch.device("cpu"), repeats=repeats,
                          warmup=warmup, clock=self.clock)


def _scripted(durations_ms: list[float], warmup: int = 2) -> FakeTime:
    """Calls lasting the given durations, in order, after `warmup` calls of 1 ms."""
    script = [1.0] * warmup + durations_ms
    return FakeTime(lambda i, _now: script[i])


# 8 repeats make one sub-series (`latency.subseries_count`) and span 26.7 ms at least
# (`latency.min_span_s`): each series below lasts longer, so one measurement is 8 calls.
STEADY = [4.0, 4.04, 3.96, 4.02, 4.0, 3.98, 4.06, 4.0]  # IQR ~1% of the median
# Half the calls stall for a scheduler tick or more: IQR far above 30% of the median.
STALLED = [0.1, 4.1, 0.1, 8.1, 0.1, 4.1, 0.1, 12.1]


def test_steady_series_is_measured_once_and_not_flagged():
    fake = _scripted(STEADY)
    rec = fake.measure(repeats=8, warmup=2)
    assert len(fake.calls) == 2 + 8 and rec["calls"] == 8
    assert rec["median"] == pytest.approx(4.0) and rec["iqr"] < 0.1
    assert rec["subseries"] == 1
    assert rec["remeasured"] is False and rec["unstable"] is False


def test_unstable_series_is_remeasured_and_flagged_when_still_unstable():
    fake = _scripted(STALLED + list(reversed(STALLED)) + STALLED)
    rec = fake.measure(repeats=8, warmup=2)
    assert len(fake.calls) == 2 + latency.MAX_SERIES * 8  # until the last measurement allowed
    assert rec["remeasured"] is True and rec["unstable"] is True
    assert latency.relative_iqr(rec) > latency.UNSTABLE_IQR
    assert latency.is_unstable(rec) and latency.unstable_batches({"32": rec}) == ["32"]


def test_unstable_series_replaced_by_a_steady_remeasurement():
    fake = _scripted(STALLED + STEADY)
    rec = fake.measure(repeats=8, warmup=2)
    assert len(fake.calls) == 2 + 2 * 8
    assert rec["remeasured"] is True and rec["unstable"] is False
    assert rec["median"] == pytest.approx(4.0)  # the steady series is the one kept


def test_a_third_series_is_taken_when_the_second_is_unstable_too():
    """Two series caught in slow spells, then a steady one: the steady one is kept and nothing
    more is timed after it."""
    fake = _scripted(STALLED + list(reversed(STALLED)) + STEADY)
    rec = fake.measure(repeats=8, warmup=2)
    assert len(fake.calls) == 2 + 3 * 8
    assert rec["remeasured"] is True and rec["unstable"] is False
    assert rec["median"] == pytest.approx(4.0)


def test_subseries_split_the_calls():
    """5 sub-series at the default 30 repeats, one at the tests' 3; however many calls the span
    took, they split into consecutive sub-series whose sizes differ by one at most."""
    assert latency.subseries_count(30) == 5 and latency.subseries_count(10) == 2
    assert latency.subseries_count(3) == 1 and latency.subseries_count(4) == 1
    assert latency.min_span_s(30) == pytest.approx(0.1)
    times = [float(i) for i in range(23)]
    parts = latency.split(times, 5)
    assert [len(p) for p in parts] == [5, 5, 5, 4, 4] and sum(parts, []) == times
    for n in range(3, 200):
        assert sum(latency.split([0.0] * n, latency.subseries_count(30)), []) == [0.0] * n


def test_the_fastest_subseries_is_the_latency():
    subs = [[0.4, 0.41, 0.39], [0.2, 0.21, 0.19, 0.2], [0.3, 0.3, 0.31]]
    assert latency.fastest(subs) == latency.spread(subs[1])


def test_a_slow_spell_over_a_whole_series_does_not_set_the_latency():
    """Issue 21's idle misses: calls of 0.2 ms run at 0.4 ms for the first 40 ms, a spell
    longer than 30 consecutive calls (12 ms), so one series would be slow throughout, with a
    small IQR and no flag. Called for 0.1 s, the fastest fifth is outside the spell."""
    fake = FakeTime(lambda _i, now: 0.4 if now < 0.04 else 0.2)
    rec = fake.measure(repeats=30, warmup=5)
    assert rec["median"] == pytest.approx(0.2) and rec["iqr"] == pytest.approx(0.0)
    assert rec["subseries"] == 5 and rec["unstable"] is False and rec["remeasured"] is False


def test_short_calls_run_back_to_back_for_the_span():
    """Calls of 0.125 ms: the measurement keeps calling, with no pause, until 0.1 s has passed
    (about 800 calls, not 30); slow calls after the first 30 still count."""
    fake = FakeTime(lambda i, _now: 0.125 if i < 300 or i % 2 else 5.0)
    rec = fake.measure(repeats=30, warmup=5)
    gaps = [b - a for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert max(gaps) <= 5.0 / 1e3 + 1e-12  # no call waited on anything but the one before
    assert fake.now - fake.calls[5] == pytest.approx(0.1, abs=5.1e-3)
    assert rec["calls"] == len(fake.calls) - 5 > 30
    assert rec["median"] == pytest.approx(0.125) and rec["subseries"] == 5


def test_long_calls_take_the_repeats_alone():
    """Calls longer than the span over the repeats: 30 calls, nothing more."""
    fake = FakeTime(lambda _i, _now: 20.0)
    rec = fake.measure(repeats=30, warmup=1)
    assert len(fake.calls) == 1 + 30 and rec["calls"] == 30
    assert rec["median"] == pytest.approx(20.0) and rec["subseries"] == 5


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
    assert set(rec) == {"median", "iqr", "repeats", "calls", "subseries", "threads",
                        "remeasured", "unstable"}
    assert rec["median"] > 0 and rec["iqr"] >= 0 and rec["repeats"] == repeats
    assert rec["subseries"] == latency.subseries_count(repeats) and rec["calls"] >= repeats
    assert rec["unstable"] == (latency.relative_iqr(rec) > latency.UNSTABLE_IQR)
    assert rec["unstable"] <= rec["remeasured"]  # only a re-measured series can be flagged

