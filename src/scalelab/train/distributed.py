"""One rung trained by several processes (ranks) at once: the rank's side of `execute.processes`.

Each rank runs the same training loop (`train_rung` with `ranks=`) on its share of the same global
batch: every rank draws the whole batch from the same generator (so the data order is the one a
single process sees) and keeps rows `rank·B/K .. (rank+1)·B/K` of it. Gradients are averaged
across ranks, so a step is the single-process step on the whole batch up to float rounding:

- `ddp`: `DistributedDataParallel`; every rank holds the whole model and optimizer state.
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`), each block of the model's `ModuleList`s
  and then the whole model sharded; parameters, gradients and optimizer state are split across
  ranks and gathered for each block's forward and backward.

Checkpoints keep the single-process format (full weights, the optimizer's own state dict), so a
rung resumes whatever its process count: the ranks gather the full state together and the first
rank alone writes it. The logged training loss is the mean over ranks, read with one all-reduce
per `LOSS_READ_EVERY` steps. The process group itself is set up by the executor
(`execute/ranks.py`), from the variables torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, ...).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from scalelab.train.checkpoint import load_checkpoint

SHARDINGS = ("ddp", "fsdp")


@dataclass
class Ranks:
    """This process's place among the ranks of one rung, and the collective steps the training
    loop takes at its seams (wrap, shard, mean, optimizer state, full model, restore)."""

    rank: int
    world: int
    sharding: str = "ddp"
    # fsdp: an unsharded copy of the model, on the CPU: the full weights are gathered into it to
    # be written (and read from it on resume), with the same tied parameters as the model.
    _plain: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def writer(self) -> bool:
        """Whether this rank writes checkpoints and reports: the first one alone does."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training steps call. ddp: a DDP wrapper around `model` (which stays the
        plain module, as checkpoints and evaluation use it); fsdp: `model` itself, sharded in
        place."""
        if self.sharding == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            device = next(model.parameters()).device
            return DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None)
        from torch.distributed.fsdp import fully_shard

        self._plain = copy.deepcopy(model).to("cpu")
        for block in _blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the global batch (`check_split` made sure they divide evenly)."""
        rows = x.shape[0] // self.world
        lo = self.rank * rows
        return x[lo:lo + rows], y[lo:lo + rows]

    def mean(self, losses: torch.Tensor) -> torch.Tensor:
        """Each rank's training losses averaged over the ranks: the global batch's loss."""
        total = losses.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world

    def optimizer_state(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
        """The optimizer's state dict as a single process's optimizer has it (collective)."""
        if self.sharding == "ddp":
            return opt.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full = get_optimizer_state_dict(model, opt, options=_full_options())
        return _by_index(full, model, opt) if self.writer else {}

    def full_model(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """A plain module holding the model's full weights on the writer (fsdp: on the CPU),
        None on the other ranks (collective: every rank must call it at the same point)."""
        if self.sharding == "ddp":
            return model if self.writer else None
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        weights = get_model_state_dict(model, options=_full_options())
        if not self.writer:
            return None
        assert self._plain is not None
        self._plain.load_state_dict(weights)
        return self._plain

    def restore(self, path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
        """Every rank reads the checkpoint at `path` into its model and optimizer; returns the
        checkpoint's training state (step, generator, curve)."""
        if self.sharding == "ddp":
            state = load_checkpoint(path, model)
            opt.load_state_dict(state["optimizer"])
            return state
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        assert self._plain is not None
        state = load_checkpoint(path, self._plain)  # safetensors restores the tied weights
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, self._plain.state_dict(), options=options)
        set_optimizer_state_dict(model, opt, _by_name(state["optimizer"], model, opt),
                                 options=options)
        return state


def check_split(batch_size: int, processes: int, what: str) -> str | None:
    """Why `batch_size` cannot be split across `processes` ranks (None when it can)."""
    if batch_size % processes:
        return (f"execute.processes {processes}: the batch of {what} ({batch_size}) must split "
                f"evenly across the processes (a multiple of {processes})")
    return None


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The units FSDP shards one by one: the members of the model's ModuleLists (a GPT's blocks,
    an MLP's layers); what is left (embeddings, head) is sharded with the model itself."""
    return [m for lst in model.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst]


def _full_options():  # noqa: ANN202 (torch.distributed.checkpoint is imported on use)
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _names(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the order a plain state dict numbers them."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in opt.param_groups for p in group["params"]]


def _by_index(full: dict, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """torch.distributed.checkpoint's full optimizer state (keyed by parameter name) in the
    format of `opt.state_dict()` (keyed by position), which single-process checkpoints hold."""
    index = {name: i for i, name in enumerate(_names(model, opt))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
    return {"state": {index[n]: s for n, s in full["state"].items()}, "param_groups": groups}


def _by_name(plain: dict, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The inverse of `_by_index`."""
    names = _names(model, opt)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in plain["param_groups"]]
    return {"state": {names[i]: s for i, s in plain["state"].items()}, "param_groups": groups}
