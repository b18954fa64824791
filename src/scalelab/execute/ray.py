"""The Ray executor: each job a Ray task with the spec's CPUs and GPUs, so jobs run side by side
where resources allow, on one machine or a cluster.

- Events travel from the workers to the driver through a Ray queue (an actor); the driver drains
  it and calls the callback in its own thread, so study.db keeps a single writer.
- A worker that dies is retried by Ray (`max_retries`); the retry resumes from the job's last
  checkpoint, which is why resume points must live on storage every node sees.
- Ctrl-C (or any error in the driver) cancels every task still running; running the same command
  again resumes.
- Without an address a local Ray starts inside this process; with one, the driver joins that
  cluster. A Ray initialised by the caller beforehand is used as it is and left running.
"""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from scalelab.errors import UserError
from scalelab.execute.base import (
    Emit,
    Event,
    ExecuteOptions,
    Failed,
    Finished,
    Job,
    Progress,
    Pruned,
    StopJob,
    Workload,
)
from scalelab.execute.branches import waves
from scalelab.execute.ranks import check_processes
from scalelab.execute.ray_ranks import remote_ranks
from scalelab.spec import ExecuteSpec

PROGRESS_EVERY = 10  # steps between Progress events sent over the network (bars update as often)
WAIT_S = 0.25  # how long the driver waits on its tasks before draining the event queue again


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'scalelab[ray]'") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """The host and port of a Ray address ("HOST:PORT" or "ray://HOST:PORT"); None for "auto"
    and other forms Ray resolves itself."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port
    except ValueError:
        return None
    return (parsed.hostname, port) if parsed.hostname and port else None


def check_answers(address: str, timeout: float = 5.0) -> None:
    """One TCP connection to the address first: Ray itself keeps retrying an address that does
    not answer for minutes before it gives up."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as err:
        raise UserError(f"Ray address {address} does not answer ({err.strerror or err}); "
                        "start the cluster (ray start --head) or fix --address") from None


def storage_path(storage: str) -> Path:
    """A storage given as a folder path (or a file:// URL) as a Path. Object-store URLs are
    refused in one line: training writes its resume points through the local file system."""
    parsed = urlparse(storage)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise UserError(f"--storage {storage}: URL storage ({parsed.scheme}://) is not "
                        "supported; give a folder that every node mounts at the same path "
                        "(NFS, a cluster file system)")
    return Path(storage).expanduser().resolve()


def _probe(folder: str, node: str) -> str | None:
    """Runs on one node: write and read back a file in the storage folder."""
    path = Path(folder) / f".probe-{node}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path.write_text(node)
        return None if path.read_text() == node else "read back something else"
    except OSError as err:
        return err.strerror or str(err)


def _remote_job(job: Job, work: Workload, queue: Any, threads: int) -> Finished:
    """Runs in a Ray worker: one job, its events put on the driver's queue."""
    import torch

    from scalelab.execute.job import run_job

    # Ray sets a worker's OMP_NUM_THREADS from its task's CPUs; torch's own count is set
    # explicitly, the same number the local executor uses, so results agree bit for bit.
    torch.set_num_threads(threads)
    return run_job(job, work, queue_emitter(job, queue))


def queue_emitter(job: Job, queue: Any) -> Emit:
    """How a worker reports the job's events: put on the driver's queue, Progress only every
    `PROGRESS_EVERY` steps and at the last."""

    def emit(event: Event) -> None:
        if isinstance(event, Progress) and event.step % PROGRESS_EVERY \
                and event.step != (event.total or job.plan.steps):
            return
        queue.put(event)

    return emit


class RayExecutor:
    """Each job a Ray task: side by side where resources allow, retried if its worker dies (on
    a cluster, the study folder must be one every node mounts)."""

    name = "ray"
    remote = True
    flags = ("--address", "--storage")

    @classmethod
    def open(cls, options: ExecuteOptions, execute: ExecuteSpec) -> RayExecutor:
        if options.storage is not None:
            storage_path(options.storage)  # a URL is refused before Ray starts
        return cls(options.address, execute)

    def __init__(self, address: str | None, execute: ExecuteSpec):
        ray = import_ray()
        self._ray = ray
        self.execute = execute
        self._owned = False
        if ray.is_initialized():
            return
        if address is not None:
            check_answers(address)
        try:
            ray.init(address=address, num_cpus=execute.local_cpus if address is None else None,
                     include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        except ConnectionError as err:
            raise UserError(f"Ray address {address} does not answer: {err}") from None
        self._owned = True

    def threads(self, work: Workload) -> int:
        return work.spec.measure.threads or max(1, int(self.execute.num_cpus))

    def check_storage(self, folder: Path) -> None:
        """Every alive node writes a file into `folder` and the driver must then see each one:
        a node that cannot write it, or writes to a folder of its own, is one line."""
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"storage {folder}: cannot create it ({err.strerror})") from None
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        probe = ray.remote(_probe)
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(folder), n["NodeID"]) for n in nodes]
        try:
            for node, error in zip(nodes, ray.get(refs), strict=True):
                where = node.get("NodeManagerAddress", node["NodeID"])
                if error is not None:
                    raise UserError(f"storage {folder}: node {where} cannot write it ({error})")
                if not (folder / f".probe-{node['NodeID']}").is_file():
                    raise UserError(f"storage {folder}: node {where} writes to a folder of its "
                                    "own there, not one every node sees; give a shared folder")
        finally:
            for node in nodes:
                (folder / f".probe-{node['NodeID']}").unlink(missing_ok=True)

    def run(self, jobs: Sequence[Job], work: Workload, emit: Emit) -> None:
        check_processes(list(jobs), work)
        ray = self._ray
        from ray.util.queue import Queue

        e = self.execute
        queue = Queue(actor_options={"num_cpus": 0})
        remote = ray.remote(_remote_job).options(
            num_cpus=e.num_cpus, num_gpus=e.num_gpus, max_retries=e.max_retries,
            retry_exceptions=False)  # a retry is for a dead worker; an exception is a bug
        # A rung on several ranks: a task that waits on Ray Train's workers (ray_ranks.py).
        ranked = ray.remote(remote_ranks).options(num_cpus=0, max_retries=0)
        work_ref = ray.put(work)  # the task's data is sent once, not once per job
        threads = self.threads(work)
        try:
            # WSD cool-down branches start from their trunk's hand-off: they run in a second
            # wave, after every trunk (other jobs run side by side as before).
            for wave in waves(jobs):
                pending = {(ranked if _ranked(job, work) else remote).remote(
                    job, work_ref, queue, threads): job for job in wave}
                self._run_wave(queue, pending, emit)
        finally:
            ray.kill(queue.actor)

    def _run_wave(self, queue: Any, pending: dict, emit: Emit) -> None:
        ray = self._ray
        try:
            while pending:
                self._drain(queue, pending, emit)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    self._drain(queue, pending, emit)  # its last events come before its end
                    if ref in pending:
                        self._finish(ref, pending.pop(ref), emit)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def _drain(self, queue: Any, pending: dict, emit: Emit) -> None:
        n = queue.qsize()
        if not n:
            return
        for event in queue.get_nowait_batch(n):
            ref = next((r for r, job in pending.items() if job.key == event.key), None)
            if ref is None:
                continue  # a job stopped already
            try:
                emit(event)
            except StopJob:
                self._ray.cancel(ref, force=True)
                del pending[ref]
                emit(Pruned(event.key, getattr(event, "step", 0)))

    def _finish(self, ref: Any, job: Job, emit: Emit) -> None:
        ray = self._ray
        try:
            finished = ray.get(ref)
        except ray.exceptions.RayError as err:
            emit(Failed(job.key, _one_line(err)))
            return
        emit(finished)
        # The driver has recorded the result: the resume points are no longer needed.
        shutil.rmtree(job.resume_dir, ignore_errors=True)

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


def _ranked(job: Job, work: Workload) -> bool:
    return work.spec.execute.processes > 1 and job.kind == "rung"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    cause = next((line for line in reversed(text) if line.strip()), type(err).__name__)
    return f"{type(err).__name__}: {cause.strip()}"[:500]

