"""The tiny spec of the compression tests."""

from __future__ import annotations

from tests.helpers import tiny_spec

METHODS = "int8,fp16,prune:0.5,prune:0.5+ft,sparse:0.5,lowrank:0.5+ft,distill"


def compress_spec(**overrides) -> dict:
    """Two rungs (1e4, 4e4 non-embedding parameters), 24k tokens each, block 32, batch 8."""
    return tiny_spec(
        name="compress-tiny",
        ladder={"sizes": [1.0e4, 4.0e4]},
        train={"tokens": 24_000, "eval_every": 50, "checkpoint_every": 100,
               "final_eval_tokens": 4096},
        # One thread: latency on a busy shared CPU is far steadier without an OpenMP barrier.
        measure={"latency_repeats": 3, "threads": 1},
        **overrides,
    )
