"""One rung trained by K processes (`execute: {processes: K}`): the driver's side starts the ranks
as torchrun would and relays the first rank's events; each rank joins the process group and
trains its share (train/distributed.py).

- Ranks are fresh interpreters (`python -m scalelab.execute.ranks`, as torchrun starts its
  workers: a fork of a process whose torch thread pools are running can hang, and multiprocessing's
  spawn would run the caller's script again), given the variables torchrun sets: MASTER_ADDR
  127.0.0.1, a free MASTER_PORT, RANK, LOCAL_RANK, WORLD_SIZE. Backend gloo on CPU, NCCL on CUDA
  (rank r on GPU r); on CPU each rank takes its share of the driver's threads. The job and its
  workload reach them pickled in a file, so a custom task or family must be importable (defined
  in a module, not in the script that runs the study).
- The first rank alone writes checkpoints and weights and reports events, which reach the driver
  through a pipe per rank; the driver hands them to its callback in its own thread, in order.
- A rank that dies or raises ends the job: the driver stops the others and raises `RankFailed`
  (the executor reports the job Failed), or the rank's UserError as it is. A rank whose driver
  died (kill -9) stops itself within a second, so a rerun never meets ranks of the last run. The
  rerun resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch

from scalelab.errors import UserError
from scalelab.execute.base import Emit, Finished, Job, Workload, one_line
from scalelab.train.distributed import check_split

POLL_S = 0.1  # how often the driver looks at its pipes and its ranks
GRACE_S = 2.0  # after a rank fails, how long the others get to report their own errors
PARENT_CHECK_S = 0.5  # how often a rank checks that its driver is alive


class RankFailed(RuntimeError):
    """A rank died or raised; the job's last checkpoint stays, and a rerun resumes from it."""


def check_processes(jobs: list[Job], work: Workload) -> None:
    """Refuse, in one line and before any job starts, a batch that does not split evenly
    between the ranks."""
    k = work.spec.execute.processes
    for job in jobs:
        if k > 1 and job.kind == "rung" and (why := check_split(job.plan.batch_size, k, job.key)):
            raise UserError(why)


def check_devices(work: Workload) -> None:
    """Refuse, in one line, ranks this machine cannot give a device each: more than its GPUs
    on CUDA, another accelerator."""
    k = work.spec.execute.processes
    if k == 1:
        return
    device = torch.device(work.device)
    if device.type == "cuda" and k > torch.cuda.device_count():
        raise UserError(f"execute.processes {k}: one GPU per rank, and this machine has "
                        f"{torch.cuda.device_count()}")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"execute.processes {k}: ranks run on CPU (gloo) or CUDA (NCCL), "
                        f"not {device.type}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(job: Job, work: Workload, emit: Emit) -> Finished:
    """Train the rung of `job` on `work.spec.execute.processes` ranks; the first rank's events go
    to `emit` (an exception from it, such as StopJob, stops every rank and propagates)."""
    k = work.spec.execute.processes
    threads = max(1, torch.get_num_threads() // k)
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(k), "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="scalelab-ranks-") as tmp:
        payload = Path(tmp) / "job.pkl"
        payload.write_bytes(pickle.dumps((job, work)))
        procs: list[subprocess.Popen] = []
        conns: list[Connection] = []
        try:
            for r in range(k):
                read, write = os.pipe()
                env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "scalelab.execute.ranks", str(payload), str(write),
                     str(os.getpid()), str(threads)], env=env, pass_fds=(write,)))
                os.close(write)
                conns.append(Connection(read, writable=False))
            return _relay(procs, conns, emit)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            for c in conns:
                c.close()


Message = tuple[str, int, Any]  # ("event" | "finished" | "error", rank, payload)


def _receive(conns: list[Connection], timeout: float) -> list[Message]:
    """The messages that reached the driver within `timeout`; a rank's pipe that closed (it
    ended) is dropped from `conns`."""
    out = []
    for conn in wait(conns, timeout=timeout):
        try:
            out.append(conn.recv())
        except EOFError:
            conns.remove(conn)
    return out


def _relay(procs: list[subprocess.Popen], conns: list[Connection], emit: Emit) -> Finished:
    """Hand the first rank's events to `emit` until it reports the job finished, while watching
    every rank; returns its Finished once every rank has exited cleanly."""
    finished: Finished | None = None
    errors: list[tuple[int, str, bool]] = []
    open_conns = list(conns)
    while True:
        for what, rank, payload in _receive(open_conns, POLL_S):
            if what == "event":
                emit(payload)
            elif what == "finished":
                finished = payload
            else:
                errors.append((rank, *payload))
        codes = [p.poll() for p in procs]
        if errors or any(c not in (None, 0) for c in codes):
            raise _failure(procs, open_conns, errors)
        if finished is not None and all(c == 0 for c in codes):
            return finished
        if not open_conns and all(c == 0 for c in codes):
            raise RankFailed("the ranks ended without reporting the rung finished")


def _failure(procs: list[subprocess.Popen], conns: list[Connection],
             errors: list[tuple[int, str, bool]]) -> Exception:
    """The error a failed run of ranks ends with: a rank killed by a signal (the others' errors
    follow from it), else the first error a rank reported (a UserError as it is)."""
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        errors += [(rank, *payload) for what, rank, payload in _receive(conns, POLL_S)
                   if what == "error"]
    # A rank killed from outside (SIGKILL: a user, the OOM killer) first: the others may abort
    # (SIGABRT from a collective's thread) because of it.
    killed = sorted(((-p.returncode != signal.SIGKILL, r), -p.returncode)
                    for r, p in enumerate(procs) if (p.returncode or 0) < 0)
    if killed:
        (_, r), sig = killed[0]
        return RankFailed(f"rank {r} of {len(procs)} was killed (signal {sig}); "
                          "the rung resumes from its last checkpoint when run again")
    if errors:
        rank, message, user = errors[0]
        return UserError(message) if user else RankFailed(f"rank {rank}: {message}")
    r, code = next((r, p.returncode) for r, p in enumerate(procs) if p.returncode)
    return RankFailed(f"rank {r} of {len(procs)} exited with code {code}")


def backend(work: Workload) -> str:
    return "nccl" if torch.device(work.device).type == "cuda" else "gloo"


def rank_workload(work: Workload, world: int, gpu: int) -> Workload:
    """The workload as one rank of `world` sees it: on CUDA its own GPU (number `gpu`), and the
    GEMM peak of all the ranks' GPUs together, so MFU counts every rank."""
    if torch.device(work.device).type != "cuda":
        return work  # on CPU the ranks share the machine whose peak was measured
    torch.cuda.set_device(gpu)
    peak = work.gemm_peak * world if work.gemm_peak else None
    return replace(work, device=f"cuda:{gpu}", gemm_peak=peak)


def _watch_parent(parent: int) -> None:
    """Runs in a thread of each rank: end the rank once its driver is gone (it was killed), so
    that no orphan keeps training and writing checkpoints beside a rerun."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def rank_main(payload: Path, fd: int, parent: int, threads: int) -> int:
    """A rank's process: join the group (from the torchrun variables), train; the first rank
    also measures and reports. Returns the exit code."""
    import torch.distributed as dist

    from scalelab.execute.job import train_job
    from scalelab.train.distributed import Ranks

    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    out = Connection(fd, readable=False)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(threads)
    try:
        job, work = pickle.loads(payload.read_bytes())
        work = rank_workload(work, world, int(os.environ["LOCAL_RANK"]))
        ranks = Ranks(rank, world, work.spec.execute.sharding)
        dist.init_process_group(backend(work))
        try:
            def emit(event: Any) -> None:
                if ranks.writer:
                    out.send(("event", rank, event))

            finished = train_job(job, work, emit, ranks)
            if finished is not None:
                out.send(("finished", rank, finished))
        finally:
            dist.destroy_process_group()
    except BaseException as err:  # reported to the driver, which decides how the job ends
        out.send(("error", rank, (one_line(err), isinstance(err, UserError))))
        return 1
    finally:
        out.close()
    return 0


if __name__ == "__main__":
    path, fd, parent, threads = sys.argv[1:5]
    code = rank_main(Path(path), int(fd), int(parent), int(threads))
    sys.stdout.flush()
    sys.stderr.flush()
    # Without the interpreter's teardown: a collective's C++ thread still alive there can abort
    # the process (SIGABRT) after its work is done and reported.
    os._exit(code)
