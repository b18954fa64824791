"""One rung on K ranks under the Ray executor (`execute: {processes: K}` with `--executor ray`):
a Ray task that runs the rung through Ray Train's `TorchTrainer` with K workers, and waits.

Ray Train starts the workers (each with the spec's `num_cpus` and `num_gpus`) and their process
group (gloo on CPU, NCCL on CUDA); each worker then trains its share as a rank of the local
executor does (train/distributed.py). The first rank's events reach the driver through the
executor's queue, and its `Finished` is the trainer's return value. A worker that dies makes Ray
Train restart the whole group (up to `max_retries` times), which resumes from the rung's last
checkpoint: the resume points live in the job's folder, which every node sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scalelab.execute.base import Emit, Finished, Job, Workload


def remote_ranks(job: Job, work: Workload, queue: Any, threads: int) -> Finished:
    """Runs in a Ray task (which holds no resources of its own): the job's rung on
    `work.spec.execute.processes` Ray Train workers."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from scalelab.execute.ranks import backend

    e = work.spec.execute
    per_worker = {"CPU": e.num_cpus, **({"GPU": e.num_gpus} if e.num_gpus else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"job": job, "work": work, "queue": queue, "threads": threads},
        torch_config=TorchConfig(backend=backend(work)),
        scaling_config=ScalingConfig(num_workers=e.processes, use_gpu=e.num_gpus > 0,
                                     resources_per_worker=per_worker),
        # Ray Train's own run records go with the job's resume points (on the storage every
        # node sees), and are removed with them once the driver has recorded the result.
        run_config=RunConfig(name="ray-train", storage_path=str(Path(job.resume_dir)),
                             failure_config=FailureConfig(max_failures=e.max_retries)))
    finished = trainer.fit().return_value
    if not isinstance(finished, Finished):
        raise RuntimeError(f"the first rank of {job.key} returned no result")
    return finished


def _worker(config: dict) -> Finished | None:
    """One Ray Train worker: a rank of the rung (the first one measures and returns Finished)."""
    import ray.train
    import torch
    from ray.train.torch import get_device

    from scalelab.execute.job import train_job
    from scalelab.execute.ranks import rank_workload
    from scalelab.execute.ray import queue_emitter
    from scalelab.train.distributed import Ranks

    job: Job = config["job"]
    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    work = config["work"]
    if torch.device(work.device).type == "cuda":
        work = rank_workload(work, world, get_device().index or 0)
    ranks = Ranks(ctx.get_world_rank(), world, work.spec.execute.sharding)
    events: Emit = queue_emitter(job, config["queue"])
    return train_job(job, work, events if ranks.writer else lambda event: None, ranks)
