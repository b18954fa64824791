"""Task `text`: language modelling on text files, a folder or a glob, or JSONL/Parquet/Arrow.

Any text (a file, a folder or a glob), or the text field of data-set files (JSONL, Parquet,
Arrow, a saved `datasets` folder: `text_files`), in bytes, BPE tokens or the tokens of a local
`tokenizer.json`.

Decisions:

- Files. A folder means every file under it, recursively, except hidden ones (a name in the path
  starting with "."), optionally only those whose suffix is in `extensions` (case-insensitive,
  "py" and ".py" alike). A glob is expanded with `glob.glob(recursive=True)` (so `**` works) and
  filtered the same way. Files are read in sorted relative-path order; a glob's paths are relative
  to its literal prefix (the folders before the first `*`, `?` or `[`), which does not change when
  files are added, so neither does the split.
- Data-set files (`text_files`). A file's kind comes from its suffix (`format: auto`) or from
  `format`; a folder written by `Dataset.save_to_disk` is one source. Each record's `text_field`
  is a document, and a source's documents joined with a blank line are its text: from here on it
  is treated exactly as a text file with that content. Data-set and plain files are not mixed.
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
  `file`: the tokenizer in a local `tokenizer.json` (`tokenizer_file`: the file or a folder
  holding it), as it is; its vocabulary (added tokens included) is the task's, and no special
  token (BOS, EOS) is added to the text.
  `bytes_per_token` = validation bytes / validation tokens, so bits per byte stay comparable.
  Texts over 1 MiB are encoded in chunks ending at a newline (uses every core; the pre-tokenizer
  splits at whitespace anyway).
- Memory. Token arrays are kept compact (uint8 for bytes, int32 for BPE ids); `batch` and
  `eval_data` return int64. Loading is cached per (options, file sizes and times), so every rung
  of a study shares one copy.
- Streaming (data-set files only). `streaming: true`, or the default (null) when the data files
  pass STREAM_BYTES on disk: the joined text and then its tokens are written to temporary files
  and memory-mapped (`text_files.Spill`), and the BPE is trained and applied a chunk at a time,
  so neither the text nor its tokens need to fit in memory. The split is the same rule on the
  same bytes: the files' kinds and paths decide which side a file's text goes to before it is
  read, and the tail cut of a single source is computed once its spilled length is known. The
  chunks are those of the in-memory path, so the tokens are identical.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import itertools
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from scalelab.errors import UserError
from scalelab.tasks import text_files
from scalelab.tasks.base import BaseTask, TaskIO
from scalelab.tasks.text_files import SAVED, Spill

DEFAULT_CONTEXT = 64
BYTE_VOCAB = 256
SNIFF_BYTES = 8192  # a NUL byte in this many leading bytes marks a file as binary
CHUNK_CHARS = 1 << 20  # texts longer than this are encoded in newline-ended chunks
SEPARATOR = b"\n\n"  # between files, as in pycode
TOKENIZER_FILE = "tokenizer.json"
STREAM_BYTES = 512 << 20  # data-set files larger than this on disk are streamed by default
ENCODE_BATCH = 16  # chunks encoded at a time when streaming


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


def _chunk_end(text: str, start: int) -> int:
    """Where the chunk of `text` that begins at `start` ends: after at most CHUNK_CHARS
    characters, at the last newline in them where there is one (and more text follows)."""
    end = min(len(text), start + CHUNK_CHARS)
    if end < len(text):
        newline = text.rfind("\n", start, end)
        if newline > start:
            end = newline + 1
    return end


def _chunks(text: str) -> list[str]:
    """`text` in pieces of at most about CHUNK_CHARS, each ending at a newline where possible."""
    out, start = [], 0
    while start < len(text):
        end = _chunk_end(text, start)
        out.append(text[start:end])
        start = end
    return out


def _streamed_chunks(data: np.ndarray, spans: list[tuple[int, int]]) -> Iterator[str]:
    """The chunks `_chunks` makes of each span's text, decoding `data` a piece at a time: a
    chunk is cut only once more than CHUNK_CHARS characters are pending, where the whole text
    would cut it too."""
    for start, end in spans:
        decoder = codecs.getincrementaldecoder("utf-8")()
        pending = ""
        for at in range(start, end, CHUNK_CHARS):
            stop = min(end, at + CHUNK_CHARS)
            pending += decoder.decode(data[at:stop].tobytes(), final=stop == end)
            while len(pending) > CHUNK_CHARS:
                cut = _chunk_end(pending, 0)
                yield pending[:cut]
                pending = pending[cut:]
        yield from _chunks(pending)


def _in_memory_chunks(data: np.ndarray, spans: list[tuple[int, int]]) -> Iterator[str]:
    for start, end in spans:
        yield from _chunks(data[start:end].tobytes().decode("utf-8"))


def _new_bpe() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE of exactly `vocab_size` tokens trained on `texts` (read once, a chunk at
    a time), or a UserError."""
    from tokenizers import pre_tokenizers, trainers

    tok = _new_bpe()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((c for t in texts for c in _chunks(t)), trainer=trainer)
    got = tok.get_vocab_size()
    if got < vocab_size:
        raise UserError(f"text: BPE vocab_size {vocab_size} is more than the train split supports "
                        f"({got} tokens after every possible merge); use vocab_size <= {got}")
    return tok


def _encode(tok: Any, chunks: Iterator[str], spill: Spill | None) -> np.ndarray:
    """The token ids of `chunks`: all encoded at once in memory, or ENCODE_BATCH at a time into
    `spill` (memory-mapped). No special token is added (a loaded tokenizer may define BOS)."""
    if spill is None:
        encodings = tok.encode_batch(list(chunks), add_special_tokens=False)
        ids = itertools.chain.from_iterable(e.ids for e in encodings)
        return np.fromiter(ids, dtype=np.int32)
    while batch := list(itertools.islice(chunks, ENCODE_BATCH)):
        encodings = tok.encode_batch(batch, add_special_tokens=False)
        ids = itertools.chain.from_iterable(e.ids for e in encodings)
        spill.write(np.fromiter(ids, dtype=np.int32).tobytes())
    return spill.array(np.int32)


def load_tokenizer(path: str) -> Any:
    """The Hugging Face tokenizer in a `tokenizer.json` file, or in a folder holding one."""
    from tokenizers import Tokenizer

    file = Path(expand(path))
    if file.is_dir():
        file = file / TOKENIZER_FILE
    if not file.is_file():
        raise UserError(f"text: tokenizer_file {path}: no {file.name} there")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:  # the Rust side raises a bare Exception for any malformed file
        raise UserError(f"text: tokenizer_file {file} is not a tokenizer.json Hugging Face "
                        f"tokenizers can read: {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class _Corpus:
    train: torch.Tensor  # token ids (uint8 for bytes, int32 for BPE)
    val: torch.Tensor
    vocab_size: int
    bytes_per_token: float
    tokenizer: Any  # the Hugging Face Tokenizer (bpe or file) or None
    fingerprint: dict


def _signature(root: Path, rels: list[Path]) -> tuple:
    stats = [(root / r).stat() for r in rels]
    return tuple((r.as_posix(), s.st_size, s.st_mtime_ns) for r, s in zip(rels, stats, strict=True))


@dataclass(frozen=True)
class _Source:
    """What to read (hashable: the cache key of `_load`)."""

    path: str  # as the options name it
    root: str
    sources: tuple[str, ...]  # posix paths under root: files, or one saved `datasets` folder
    kinds: tuple[str, ...]  # of each source: "text", a `datasets` reader, or SAVED
    signature: tuple  # (posix path, size, mtime_ns) of every file read
    text_field: str
    streaming: bool

    @property
    def rels(self) -> list[Path]:
        return [Path(s) for s in self.sources]


@dataclass
class _Split:
    """The text of both splits, before tokens: uint8 arrays (in memory or memory-mapped) and
    the span of each file's part in them (BPE chunks never cross a file)."""

    train: np.ndarray
    val: np.ndarray
    train_spans: list[tuple[int, int]]
    val_spans: list[tuple[int, int]]
    split: str  # "tail" or "files"
    files: int
    skipped: int
    sha256: str


def _tail_cut(data: bytes | np.ndarray, val_fraction: float) -> int:
    """Where validation begins in a single source: the last `val_fraction` of its bytes, the
    cut moved forward to a UTF-8 character boundary."""
    cut = len(data) - round(val_fraction * len(data))
    while cut < len(data) and data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
        cut += 1
    return cut


def _pieces(src: _Source, rel: Path, kind: str) -> Iterator[bytes]:
    """The bytes of one source's text, in pieces (a text file whole, a data set per document)."""
    if kind == "text":
        yield (Path(src.root) / rel).read_bytes()
    else:
        file = Path(src.root) / rel
        yield from text_files.joined(text_files.documents(file, kind, src.text_field, str(file)))


def _split_in_memory(src: _Source, val_fraction: float) -> _Split:
    """Read every source into memory and split it (see the module docstring)."""
    texts: list[tuple[Path, bytes]] = []
    skipped: list[Path] = []
    for rel, kind in zip(src.rels, src.kinds, strict=True):
        data = b"".join(_pieces(src, rel, kind))
        if kind == "text" and is_binary(data):
            skipped.append(rel)
        else:
            texts.append((rel, data))
    if skipped:
        warnings.warn(f"text: skipped {len(skipped)} binary file(s) under {src.path} "
                      f"(e.g. {skipped[0].as_posix()})", stacklevel=4)
    if not texts:
        raise UserError(f"text: no text files under {src.path} ({len(skipped)} binary skipped)")
    digest = hashlib.sha256()
    for rel, data in texts:
        digest.update(rel.as_posix().encode() + b"\0" + data)
    if len(texts) == 1:
        data = texts[0][1]
        cut = _tail_cut(data, val_fraction)
        train_parts, val_parts = [data[:cut]], [data[cut:]]
        split = "tail"
    else:
        val_idx = validation_files([rel for rel, _ in texts], val_fraction)
        train_parts = [d + SEPARATOR for i, (_, d) in enumerate(texts) if i not in val_idx]
        val_parts = [d + SEPARATOR for i, (_, d) in enumerate(texts) if i in val_idx]
        split = "files"

    def joined(parts: list[bytes]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        ends = list(itertools.accumulate(len(p) for p in parts))
        spans = list(zip([0, *ends[:-1]], ends, strict=True))
        return np.frombuffer(b"".join(parts), dtype=np.uint8).copy(), spans

    (train, train_spans), (val, val_spans) = joined(train_parts), joined(val_parts)
    return _Split(train, val, train_spans, val_spans, split, len(texts), len(skipped),
                  digest.hexdigest())


def _split_streamed(src: _Source, val_fraction: float) -> _Split:
    """The same split as `_split_in_memory` (data-set sources only), the text written to
    temporary files as it is read, then memory-mapped."""
    digest = hashlib.sha256()
    rels = src.rels

    def spill(rel: Path, kind: str, into: Spill) -> tuple[int, int]:
        start = into.size
        digest.update(rel.as_posix().encode() + b"\0")
        for piece in _pieces(src, rel, kind):
            into.write(piece)
            digest.update(piece)
        return start, into.size

    if len(rels) == 1:
        whole = Spill()
        spill(rels[0], src.kinds[0], whole)
        data = whole.array()
        cut = _tail_cut(data, val_fraction)
        return _Split(data[:cut], data[cut:], [(0, cut)], [(0, len(data) - cut)], "tail", 1, 0,
                      digest.hexdigest())
    val_idx = validation_files(rels, val_fraction)
    sides = {False: (Spill(), []), True: (Spill(), [])}
    for i, (rel, kind) in enumerate(zip(rels, src.kinds, strict=True)):
        into, spans = sides[i in val_idx]
        start, _ = spill(rel, kind, into)
        spans.append((start, into.write(SEPARATOR)[1]))
    (train, train_spans), (val, val_spans) = [(s.array(), spans) for s, spans in sides.values()]
    return _Split(train, val, train_spans, val_spans, "files", len(rels), 0, digest.hexdigest())


def _tokenizer(tokenizer: str, vocab_size: int | None, tokenizer_dir: str | None,
               tokenizer_file: str | None, split: _Split, streaming: bool) -> Any:
    """The BPE (saved in `tokenizer_dir`, or trained on the train split and saved there) or the
    tokenizer of `tokenizer_file`."""
    if tokenizer == "file":
        assert tokenizer_file is not None
        return load_tokenizer(tokenizer_file)
    assert vocab_size is not None
    saved = Path(tokenizer_dir) / TOKENIZER_FILE if tokenizer_dir else None
    if saved is not None and saved.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(saved))
        if tok.get_vocab_size() != vocab_size:
            raise UserError(f"text: {saved} has a vocabulary of {tok.get_vocab_size()}, not "
                            f"vocab_size {vocab_size}; remove it or use another folder")
        return tok
    chunks = _streamed_chunks if streaming else _in_memory_chunks
    tok = train_bpe(chunks(split.train, split.train_spans), vocab_size)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(saved))
    return tok


@lru_cache(maxsize=4)
def _load(src: _Source, val_fraction: float, tokenizer: str, vocab_size: int | None,
          tokenizer_dir: str | None, tokenizer_file: str | None,
          tokenizer_stamp: tuple) -> _Corpus:
    """Read, split and tokenize. Cached: the arguments name the files, their sizes and times."""
    split = (_split_streamed if src.streaming else _split_in_memory)(src, val_fraction)
    tok = None
    extra: dict[str, Any] = {}
    if tokenizer == "bytes":
        train, val = torch.from_numpy(split.train), torch.from_numpy(split.val)
        vocab = BYTE_VOCAB
    else:
        tok = _tokenizer(tokenizer, vocab_size, tokenizer_dir, tokenizer_file, split,
                         src.streaming)
        chunks = _streamed_chunks if src.streaming else _in_memory_chunks
        train, val = (torch.from_numpy(_encode(tok, chunks(data, spans),
                                               Spill() if src.streaming else None))
                      for data, spans in ((split.train, split.train_spans),
                                          (split.val, split.val_spans)))
        vocab = vocab_size if tokenizer == "bpe" else tok.get_vocab_size()
        extra["tokenizer_sha256"] = hashlib.sha256(tok.to_str().encode()).hexdigest()
    if any(kind != "text" for kind in src.kinds):
        extra["format"] = sorted(set(src.kinds))[0] if len(set(src.kinds)) == 1 \
            else sorted(set(src.kinds))
        extra["text_field"] = src.text_field
    n_train, n_val = len(split.train), len(split.val)
    bytes_per_token = n_val / max(1, val.numel())
    fingerprint = {
        "path": src.path,
        "root": src.root,
        "split": split.split,
        "files": split.files,
        "train_files": len(split.train_spans),
        "val_files": len(split.val_spans),
        "skipped_binary": split.skipped,
        "bytes": n_train + n_val,
        "train_bytes": n_train,
        "val_bytes": n_val,
        "tokens": int(train.numel() + val.numel()),
        "train_tokens": int(train.numel()),
        "val_tokens": int(val.numel()),
        "tokenizer": tokenizer,
        "vocab_size": vocab,
        "bytes_per_token": bytes_per_token,
        "sha256": split.sha256,
        **extra,
    }
    return _Corpus(train, val, vocab, bytes_per_token, tok, fingerprint)


def _source(options: Any) -> _Source:
    """The sources `options` name, their kinds, and whether to stream; the checks that need no
    reading (a mix of kinds, `text_field` or `streaming` on plain text) are UserErrors here."""
    folder = Path(expand(options.path))
    if options.format != "text" and folder.is_dir() and text_files.is_saved_dataset(folder):
        root, sources, kinds = folder.parent, [Path(folder.name)], [SAVED]
        files = [f.relative_to(root) for f in folder.rglob("*") if f.is_file()]
    else:
        splits = text_files.saved_dataset_dict(folder) if folder.is_dir() else None
        if options.format != "text" and splits is not None:
            raise UserError(f"text: {options.path} is a saved DatasetDict with the splits "
                            f"{', '.join(splits)}; point path at one of their folders")
        root, sources = find_files(options.path, options.extensions)
        kinds, files = text_files.kinds_of(sources, options.format), sources
    records = [r for r, k in zip(sources, kinds, strict=True) if k != "text"]
    plain = [r for r, k in zip(sources, kinds, strict=True) if k == "text"]
    if records and plain:
        raise UserError(f"text: {options.path} mixes data-set files (e.g. {records[0].as_posix()})"
                        f" with other files (e.g. {plain[0].as_posix()}); keep one kind with "
                        "extensions, or read all as text with format: text")
    if not records and options.text_field is not None:
        raise UserError(f"text: text_field applies to data-set files (.jsonl, .ndjson, .parquet, "
                        f".arrow, a saved datasets folder), not {plain[0].as_posix()}; "
                        "format: json, parquet or arrow reads another suffix as one")
    if not records and options.streaming:
        raise UserError("text: streaming applies to data-set files (JSONL, Parquet, Arrow, a "
                        f"saved datasets folder); {options.path} is plain text")
    signature = _signature(root, sorted(files, key=lambda r: r.as_posix()))
    streaming = options.streaming
    if streaming is None:
        streaming = bool(records) and sum(s[1] for s in signature) > STREAM_BYTES
    return _Source(options.path, str(root), tuple(r.as_posix() for r in sources), tuple(kinds),
                   signature, options.text_field or "text", streaming)


class TextTask(BaseTask):
    """Next-token prediction on windows of `context` tokens of any text (see the module docstring).

    Attributes: `options`, `context`, `train` and `val` (1-D token tensors), `vocab_size`,
    `tokenizer` (the Hugging Face `Tokenizer` for bpe or file, else None), `bytes_per_token`, `unit`
    ("byte" or "token"), `io` = TaskIO("sequence", (context,), vocab, vocab).
    """

    name = "text"
    objective = "lm"
    unit = "byte"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        path: str = Field(description="a text file, a folder of them, or a glob")
        tokenizer: Literal["bytes", "bpe", "file"] = "bytes"
        vocab_size: int | None = Field(None, validate_default=True,
                                       description="BPE only (required there): tokens, > 256")
        tokenizer_file: str | None = Field(
            None, validate_default=True,
            description="tokenizer: file only (required there): a local tokenizer.json, or a "
                        "folder holding one")
        val_fraction: float = Field(0.05, gt=0, lt=1)
        extensions: list[str] | None = Field(
            None, description="a folder or glob: only files with these suffixes; default: all")
        tokenizer_dir: str | None = Field(
            None, description="where the trained BPE is saved as tokenizer.json and reused")
        text_field: str | None = Field(
            None, description='data-set files: the field that holds the text (default "text")')
        format: Literal["auto", "text", "json", "parquet", "arrow"] = Field(
            "auto", description="auto: by suffix (.jsonl/.ndjson, .parquet, .arrow, a saved "
                                "datasets folder; else text); else every file is read as this")
        streaming: bool | None = Field(
            None, description="data-set files: spill text and tokens to memory-mapped "
                              "temporary files; default: when the files pass 512 MiB")

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
                raise PydanticCustomError("vocab_size", "applies only to tokenizer: bpe (a "
                                          "tokenizer_file brings its own vocabulary)")
            return value

        @field_validator("tokenizer_file")
        @classmethod
        def _check_file(cls, value: str | None, info: Any) -> str | None:
            if info.data.get("tokenizer") == "file" and value is None:
                raise PydanticCustomError("tokenizer_file", "required with tokenizer: file")
            if info.data.get("tokenizer") != "file" and value is not None:
                raise PydanticCustomError("tokenizer_file", "applies only to tokenizer: file")
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
        tok_dir = options.tokenizer_dir
        if options.tokenizer == "file":
            assert options.tokenizer_file is not None
            saved = Path(expand(options.tokenizer_file))
            saved = saved / TOKENIZER_FILE if saved.is_dir() else saved
        else:
            saved = Path(tok_dir) / TOKENIZER_FILE if tok_dir else None
        stamp = ()
        if saved is not None and saved.is_file():
            st = saved.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        corpus = _load(_source(options), options.val_fraction, options.tokenizer,
                       options.vocab_size, tok_dir, options.tokenizer_file, stamp)
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
