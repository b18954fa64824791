"""Task `text`: language modelling on any text (a file, a folder or a glob), bytes or BPE tokens.

Decisions:

- Files. A folder means every file under it, recursively, except hidden ones (a name in the path
  starting with "."), optionally only those whose suffix is in `extensions` (case-insensitive,
  "py" and ".py" alike). A glob is expanded with `glob.glob(recursive=True)` (so `**` works) and
  filtered the same way. Files are read in sorted relative-path order; a glob's paths are relative
  to its literal prefix (the folders before the first `*`, `?` or `[`), which does not change when
  files are added, so neither does the split.
- Binary files (a NUL byte in the first 8 KiB, or not valid UTF-8) are skipped with one warning
  that says how many; both tokenizers see the same files.
- Split. Several files: a file goes to validation when the first byte of the SHA-256 of its posix
  relative path is < round(val_fraction * 256) (as `pycode`), so validation files are unseen and
  the split does not depend on which other files exist; if that leaves a split empty, the file
  with the smallest (or largest) digest is moved, so each split has a file. Files are joined with
  a blank line, as in `pycode`. One file: the contiguous tail `val_fraction` of its bytes is
  validation (the cut moved forward to a UTF-8 character boundary).
- Tokens. `bytes`: a token is a byte (vocabulary 256, unit "byte"). `bpe`: byte-level BPE trained
  with Hugging Face `tokenizers` on the train split only: GPT-2's pre-tokenizer without a prefix
  space and all 256 byte symbols in the initial alphabet, so any text encodes and no unknown or
  special token is needed (unit "token"). It is saved as `tokenizer.json` in `tokenizer_dir` and
  reused when that file exists (resume); without `tokenizer_dir` it lives in memory only.
  `bytes_per_token` = validation bytes / validation tokens, so bits per byte stay comparable.
  Texts over 1 MiB are encoded in chunks ending at a newline (uses every core; the pre-tokenizer
  splits at whitespace anyway).
- Memory. Token arrays are kept compact (uint8 for bytes, int32 for BPE ids); `batch` and
  `eval_data` return int64. Loading is cached per (options, file sizes and times), so every rung
  of a study shares one copy.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from scalelab.errors import UserError
from scalelab.tasks.base import BaseTask, TaskIO

DEFAULT_CONTEXT = 64
BYTE_VOCAB = 256
SNIFF_BYTES = 8192  # a NUL byte in this many leading bytes marks a file as binary
CHUNK_CHARS = 1 << 20  # texts longer than this are encoded in newline-ended chunks
SEPARATOR = b"\n\n"  # between files, as in pycode
TOKENIZER_FILE = "tokenizer.json"


def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def expand(path: str) -> str:
    """`~`, `{stdlib}` (this Python's standard-library folder) and `{purelib}` (the folder of
    this environment's installed pure-Python packages) expanded: a spec can name text that ships
    with every Python, such as `{stdlib}/idlelib/*.txt`, on any machine."""
    import sysconfig

    paths = sysconfig.get_paths()
    for name in ("stdlib", "purelib"):
        path = path.replace("{" + name + "}", paths[name])
    return os.path.expanduser(path)


def find_files(path: str, extensions: list[str] | None = None) -> tuple[Path, list[Path]]:
    """(root, sorted relative paths) of the files `path` names: a file, a folder or a glob."""
    p = Path(expand(path))
    if p.is_file():
        return p.parent, [Path(p.name)]
    if p.is_dir():
        root = p
        rels = [f.relative_to(p) for f in p.rglob("*") if f.is_file()]
        rels = [r for r in rels if not _is_hidden(r)]
        if not rels:
            raise UserError(f"text: folder {path} has no files")
    elif _has_magic(str(p)):
        literal = list(itertools.takewhile(lambda part: not _has_magic(part), p.parts))
        root = Path(*literal) if literal else Path(".")
        rels = [Path(m).relative_to(root) for m in glob.glob(str(p), recursive=True)
                if Path(m).is_file()]
        if not rels:
            raise UserError(f"text: no file matches {path}")
    else:
        raise UserError(f"text: {path} does not exist")
    if extensions:
        rels = [r for r in rels if r.suffix.lower() in extensions]
        if not rels:
            raise UserError(f"text: no file under {path} ends in {', '.join(extensions)}")
    return root, sorted(rels, key=lambda r: r.as_posix())


def is_binary(data: bytes) -> bool:
    """A NUL byte in the first 8 KiB, or not valid UTF-8."""
    if b"\0" in data[:SNIFF_BYTES]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def validation_files(rels: list[Path], val_fraction: float) -> set[int]:
    """Indices of the files that go to validation (see the module docstring); >= 2 files."""
    buckets = round(val_fraction * 256)
    digests = [hashlib.sha256(r.as_posix().encode()).digest() for r in rels]
    val = {i for i, d in enumerate(digests) if d[0] < buckets}
    if not val:
        val.add(min(range(len(rels)), key=lambda i: digests[i]))
    if len(val) == len(rels):
        val.remove(max(range(len(rels)), key=lambda i: digests[i]))
    return val


def _chunks(text: str) -> list[str]:
    """`text` in pieces of at most about CHUNK_CHARS, each ending at a newline where possible."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + CHUNK_CHARS)
        if end < len(text):
            newline = text.rfind("\n", start, end)
            if newline > start:
                end = newline + 1
        out.append(text[start:end])
        start = end
    return out


def _new_bpe() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE of exactly `vocab_size` tokens trained on `texts`, or a UserError."""
    from tokenizers import pre_tokenizers, trainers

    tok = _new_bpe()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    chunks = [c for t in texts for c in _chunks(t)]
    tok.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
    got = tok.get_vocab_size()
    if got < vocab_size:
        raise UserError(f"text: BPE vocab_size {vocab_size} is more than the train split supports "
                        f"({got} tokens after every possible merge); use vocab_size <= {got}")
    return tok


def _encode(tok: Any, texts: list[str]) -> np.ndarray:
    chunks = [c for t in texts for c in _chunks(t)]
    encodings = tok.encode_batch(chunks)
    ids = itertools.chain.from_iterable(e.ids for e in encodings)
    return np.fromiter(ids, dtype=np.int32)


@dataclass(frozen=True)
class _Corpus:
    train: torch.Tensor  # token ids (uint8 for bytes, int32 for BPE)
    val: torch.Tensor
    vocab_size: int
    bytes_per_token: float
    tokenizer: Any  # the Hugging Face Tokenizer (BPE) or None
    fingerprint: dict


def _signature(root: Path, rels: list[Path]) -> tuple:
    stats = [(root / r).stat() for r in rels]
    return tuple((r.as_posix(), s.st_size, s.st_mtime_ns) for r, s in zip(rels, stats, strict=True))


@lru_cache(maxsize=4)
def _load(path: str, root: str, signature: tuple, val_fraction: float, tokenizer: str,
          vocab_size: int | None, tokenizer_dir: str | None, tokenizer_stamp: tuple) -> _Corpus:
    """Read, split and tokenize. Cached: the arguments name the files, their sizes and times."""
    base = Path(root)
    rels = [Path(s[0]) for s in signature]
    texts: list[tuple[Path, bytes]] = []
    skipped: list[Path] = []
    for rel in rels:
        data = (base / rel).read_bytes()
        if is_binary(data):
            skipped.append(rel)
        else:
            texts.append((rel, data))
    if skipped:
        warnings.warn(f"text: skipped {len(skipped)} binary file(s) under {path} "
                      f"(e.g. {skipped[0].as_posix()})", stacklevel=3)
    if not texts:
        raise UserError(f"text: no text files under {path} ({len(skipped)} binary skipped)")
    digest = hashlib.sha256()
    for rel, data in texts:
        digest.update(rel.as_posix().encode() + b"\0" + data)

    if len(texts) == 1:
        data = texts[0][1]
        cut = len(data) - round(val_fraction * len(data))
        while cut < len(data) and data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            cut += 1
        train_parts, val_parts = [data[:cut]], [data[cut:]]
        n_train_files = n_val_files = 1
        split = "tail"
    else:
        val_idx = validation_files([rel for rel, _ in texts], val_fraction)
        train_parts = [d + SEPARATOR for i, (_, d) in enumerate(texts) if i not in val_idx]
        val_parts = [d + SEPARATOR for i, (_, d) in enumerate(texts) if i in val_idx]
        n_train_files, n_val_files = len(train_parts), len(val_parts)
        split = "files"
    train_bytes = b"".join(train_parts)
    val_bytes = b"".join(val_parts)

    tok = None
    extra: dict[str, Any] = {}
    if tokenizer == "bytes":
        train = torch.from_numpy(np.frombuffer(train_bytes, dtype=np.uint8).copy())
        val = torch.from_numpy(np.frombuffer(val_bytes, dtype=np.uint8).copy())
        vocab = BYTE_VOCAB
    else:
        assert vocab_size is not None
        train_texts = [p.decode("utf-8") for p in train_parts]
        saved = Path(tokenizer_dir) / TOKENIZER_FILE if tokenizer_dir else None
        if saved is not None and saved.is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(saved))
            if tok.get_vocab_size() != vocab_size:
                raise UserError(f"text: {saved} has a vocabulary of {tok.get_vocab_size()}, not "
                                f"vocab_size {vocab_size}; remove it or use another folder")
        else:
            tok = train_bpe(train_texts, vocab_size)
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                tok.save(str(saved))
        train = torch.from_numpy(_encode(tok, train_texts))
        val = torch.from_numpy(_encode(tok, [p.decode("utf-8") for p in val_parts]))
        vocab = vocab_size
        extra["tokenizer_sha256"] = hashlib.sha256(tok.to_str().encode()).hexdigest()
    bytes_per_token = len(val_bytes) / max(1, val.numel())
    fingerprint = {
        "path": path,
        "root": str(base),
        "split": split,
        "files": len(texts),
        "train_files": n_train_files,
        "val_files": n_val_files,
        "skipped_binary": len(skipped),
        "bytes": len(train_bytes) + len(val_bytes),
        "train_bytes": len(train_bytes),
        "val_bytes": len(val_bytes),
        "tokens": int(train.numel() + val.numel()),
        "train_tokens": int(train.numel()),
        "val_tokens": int(val.numel()),
        "tokenizer": tokenizer,
        "vocab_size": vocab,
        "bytes_per_token": bytes_per_token,
        "sha256": digest.hexdigest(),
        **extra,
    }
    return _Corpus(train, val, vocab, bytes_per_token, tok, fingerprint)


class TextTask(BaseTask):
    """Next-token prediction on windows of `context` tokens of any text (see the module docstring).

    Attributes: `options`, `context`, `train` and `val` (1-D token tensors), `vocab_size`,
    `tokenizer` (the Hugging Face `Tokenizer` for BPE, else None), `bytes_per_token`, `unit`
    ("byte" or "token"), `io` = TaskIO("sequence", (context,), vocab, vocab).
    """

    name = "text"
    objective = "lm"
    unit = "byte"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        path: str = Field(description="a text file, a folder of them, or a glob")
        tokenizer: Literal["bytes", "bpe"] = "bytes"
        vocab_size: int | None = Field(None, validate_default=True,
                                       description="BPE only (required there): tokens, > 256")
        val_fraction: float = Field(0.05, gt=0, lt=1)
        extensions: list[str] | None = Field(
            None, description="a folder or glob: only files with these suffixes; default: all")
        tokenizer_dir: str | None = Field(
            None, description="where the trained BPE is saved as tokenizer.json and reused")

        @field_validator("vocab_size")
        @classmethod
        def _check_vocab(cls, value: int | None, info: Any) -> int | None:
            if info.data.get("tokenizer") == "bpe":
                if value is None:
                    raise PydanticCustomError("vocab_size", "required with tokenizer: bpe")
                if value <= BYTE_VOCAB:
                    raise PydanticCustomError(
                        "vocab_size", "must be more than 256 (the 256 byte symbols plus merges); "
                        "use tokenizer: bytes for a byte vocabulary")
            elif value is not None:
                raise PydanticCustomError("vocab_size", "applies only to tokenizer: bpe")
            return value

        @field_validator("extensions")
        @classmethod
        def _dotted(cls, value: list[str] | None) -> list[str] | None:
            if value is None:
                return None
            if not value:
                raise PydanticCustomError("extensions", "list at least one suffix, or leave it out")
            return ["." + v.lower().lstrip(".") for v in value]

    def __init__(self, options: Options, context: int | None = None):
        self.options = options
        self.context = DEFAULT_CONTEXT if context is None else int(context)
        if self.context < 1:
            raise UserError(f"text: context must be at least 1 token, not {self.context}")
        root, rels = find_files(options.path, options.extensions)
        tok_dir = options.tokenizer_dir
        saved = Path(tok_dir) / TOKENIZER_FILE if tok_dir else None
        stamp = ()
        if saved is not None and saved.is_file():
            st = saved.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        corpus = _load(options.path, str(root), _signature(root, rels), options.val_fraction,
                       options.tokenizer, options.vocab_size, tok_dir, stamp)
        need = self.context + 2
        if corpus.train.numel() < need or corpus.val.numel() < need:
            raise UserError(
                f"text: {options.path} is too small for windows of {self.context} tokens: train "
                f"has {corpus.train.numel()} tokens, validation {corpus.val.numel()} "
                f"(need {need} in each)")
        self.train = corpus.train
        self.val = corpus.val
        self.vocab_size = corpus.vocab_size
        self.tokenizer = corpus.tokenizer
        self.bytes_per_token = corpus.bytes_per_token
        self.unit = "byte" if options.tokenizer == "bytes" else "token"
        self.io = TaskIO("sequence", (self.context,), self.vocab_size, self.vocab_size)
        self._fingerprint = corpus.fingerprint

    def fingerprint(self) -> dict:
        return {**self._fingerprint, "context": self.context}

    @property
    def train_units(self) -> int:
        return int(self.train.numel())

    def batch(self, batch_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows of the train split; y is x shifted by one token."""
        hi = self.train.numel() - self.context - 1
        starts = torch.randint(0, hi, (batch_size,), generator=generator)
        idx = starts[:, None] + torch.arange(self.context + 1)
        chunk = self.train[idx].long()
        return chunk[:, :-1], chunk[:, 1:]

    def eval_data(self, n_units: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        """Evenly spaced windows of `split` covering about `n_units` target tokens, fixed."""
        data = self._split(split)
        n_windows = max(1, n_units // self.context)
        hi = data.numel() - self.context - 1
        starts = torch.linspace(0, hi, n_windows).long()
        idx = starts[:, None] + torch.arange(self.context + 1)
        chunk = data[idx].long()
        return chunk[:, :-1], chunk[:, 1:]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`."""
        if self.tokenizer is None:
            return list(text.encode("utf-8"))
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """The text of token ids (invalid UTF-8 from a partial sequence is replaced)."""
        ids = [int(i) for i in ids]
        if self.tokenizer is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return self.tokenizer.decode(ids)

    def _split(self, split: str) -> torch.Tensor:
        if split == "val":
            return self.val
        if split == "train":
            return self.train
        raise ValueError(f"split must be 'val' or 'train', not {split!r}")
