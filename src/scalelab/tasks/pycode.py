"""Task `pycode`: byte-level language modelling on this interpreter's standard-library source.

The corpus is already on every machine that runs scalelab, so the default study needs no download.
Files: every `*.py` under `sysconfig`'s stdlib path, skipping `site-packages` and any `test` or
`tests` folder, read in sorted relative-path order. Each file goes to validation when the first
byte of the SHA-256 of its relative path is < 13 (13/256 ≈ 5%), else to train, so validation files
are unseen and the split does not depend on which other files exist. Files are joined with a
blank line; a token is a byte (vocabulary 256), so loss in nats/token is also nats/byte.
The sequence length (`context`) is what the family asks for (the GPT's block_size).
"""

from __future__ import annotations

import hashlib
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from scalelab.errors import UserError
from scalelab.tasks.base import BaseTask, TaskIO
from scalelab.tasks.text import expand

VAL_BUCKETS = 13  # of 256: about 5% of files go to validation
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__"}


def corpus_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts[:-1]):
            continue
        files.append(rel)
    return sorted(files, key=lambda p: p.as_posix())


def is_validation(rel: Path) -> bool:
    return hashlib.sha256(rel.as_posix().encode()).digest()[0] < VAL_BUCKETS


@lru_cache(maxsize=4)
def load_corpus(root: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train bytes, validation bytes, fingerprint). Cached: every rung of a study shares it."""
    base = Path(root)
    train, val = [], []
    digest = hashlib.sha256()
    n_files = 0
    for rel in corpus_files(base):
        data = (base / rel).read_bytes() + b"\n\n"
        digest.update(rel.as_posix().encode() + b"\0" + data)
        (val if is_validation(rel) else train).append(data)
        n_files += 1
    train_bytes = np.frombuffer(b"".join(train), dtype=np.uint8)
    val_bytes = np.frombuffer(b"".join(val), dtype=np.uint8)
    fingerprint = {
        "root": str(base),
        "files": n_files,
        "val_files": len(val),
        "bytes": int(train_bytes.size + val_bytes.size),
        "train_bytes": int(train_bytes.size),
        "val_bytes": int(val_bytes.size),
        "sha256": digest.hexdigest(),
    }
    return train_bytes, val_bytes, fingerprint


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


class PyCodeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: str | None = Field(None, description="corpus folder ({stdlib}, {purelib} and ~ are "
                                               "expanded); default: this Python's stdlib")


def windows(data: torch.Tensor, starts: torch.Tensor,
            context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of context + 1 ids at `starts`: inputs, and targets shifted by one."""
    idx = starts[:, None] + torch.arange(context + 1)
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


def random_windows(data: torch.Tensor, batch_size: int, context: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows drawn from a seeded generator."""
    hi = data.numel() - context - 1
    starts = torch.randint(0, hi, (batch_size,), generator=generator)
    return windows(data, starts, context)


def spaced_windows(data: torch.Tensor, n_units: int,
                   context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly spaced windows covering about n_units target ids, the same every call."""
    n_windows = max(1, n_units // context)
    hi = data.numel() - context - 1
    return windows(data, torch.linspace(0, hi, n_windows).long(), context)


class PyCodeTask(BaseTask):
    name = "pycode"
    unit = "byte"
    objective = "lm"
    Options = PyCodeOptions

    def __init__(self, options: PyCodeOptions | None = None, context: int | None = None):
        options = options or PyCodeOptions()
        train, val, fp = load_corpus(expand(options.root) if options.root else str(stdlib_root()))
        if train.size < 10_000 or val.size < 1_000:
            raise UserError(f"corpus at {fp['root']} is too small ({fp['bytes']} bytes)")
        self.train = torch.from_numpy(train.copy())
        self.val = torch.from_numpy(val.copy())
        self._fingerprint = fp
        self.context = context or 64
        self.io = TaskIO("sequence", (self.context,), 256, 256)

    def fingerprint(self) -> dict:
        return dict(self._fingerprint)

    @property
    def train_units(self) -> int:
        return int(self.train.numel())

    def batch(self, batch_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows of the training split; y is x shifted by one byte."""
        return random_windows(self.train, batch_size, self.context, generator)

    def eval_data(self, n_units: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        """Evenly spaced windows of `split` covering about n_units target bytes, fixed forever."""
        return spaced_windows(self.val if split == "val" else self.train, n_units, self.context)
