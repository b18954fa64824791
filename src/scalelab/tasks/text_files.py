"""Data-set files for the `text` task: JSONL, Parquet and Arrow files and folders written by
`Dataset.save_to_disk`, read through Hugging Face `datasets` (the `hf` extra), offline; and the
temporary files a streamed corpus lives in.

Decisions:

- Kinds. By suffix (`format: auto`): `.jsonl` and `.ndjson` are JSON lines, `.parquet` Parquet,
  `.arrow` Arrow; a folder holding `state.json` and `dataset_info.json` is a saved data set;
  anything else is plain text. An explicit `format` reads every file as that kind.
- Reading. Files are opened with `load_dataset(kind, data_files=[file], streaming=True)` (read in
  record batches; nothing is converted or cached under the `datasets` cache) and a saved folder
  with `load_from_disk` (memory-mapped); either way only the text column is read, a batch at a
  time, so the data never has to fit in memory. `HF_DATASETS_OFFLINE` is set before `datasets`
  is imported: the packaged readers never need the network.
- Documents. Each record's text field is one document; a file's documents are joined with a
  blank line (as the text task joins files), so its text is exactly that of a text file holding
  them joined by "\\n\\n". A null is skipped with one warning that says how many.
- Spill. A streamed corpus is written to an unnamed temporary file (in `TMPDIR`) and
  memory-mapped copy-on-write, so its pages come from the file, not from the process's memory.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError

SUFFIX_KINDS = {".jsonl": "json", ".ndjson": "json", ".parquet": "parquet", ".arrow": "arrow"}
FORMATS = ("auto", "text", "json", "parquet", "arrow")
SAVED = "saved"  # the kind of a folder written by `Dataset.save_to_disk`
BATCH_ROWS = 1024  # records read at a time
STRING_TYPES = ("string", "large_string")
DOC_SEPARATOR = b"\n\n"  # between a file's documents, as between files
INSTALL = "pip install 'scalelab[hf]'"


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by `Dataset.save_to_disk`."""
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def saved_dataset_dict(folder: Path) -> list[str] | None:
    """The split names of a folder written by `DatasetDict.save_to_disk`, else None."""
    if not (folder / "dataset_dict.json").is_file():
        return None
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_saved_dataset(p))


def kinds_of(rels: list[Path], fmt: str) -> list[str]:
    """The kind of each file: a `datasets` reader ("json", "parquet", "arrow") or "text"."""
    if fmt != "auto":
        return [fmt] * len(rels)
    return [SUFFIX_KINDS.get(r.suffix.lower(), "text") for r in rels]


def _datasets() -> Any:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise UserError(f"text: data-set files (JSONL, Parquet, Arrow, a saved folder) need "
                        f"Hugging Face datasets: {INSTALL}") from None
    datasets.disable_progress_bars()
    # Its reader logs a failure before raising it; the raised error becomes our one line.
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    return datasets


def _open(source: Path, kind: str, shown: str) -> Any:
    """The records of one file or saved folder, as a `datasets` (Iterable)Dataset."""
    if kind != SAVED and source.stat().st_size == 0:
        raise UserError(f"text: {shown} is empty")
    datasets = _datasets()
    if kind == SAVED:
        return datasets.load_from_disk(str(source))
    if kind == "parquet":
        import pyarrow.parquet as pq

        if pq.read_metadata(source).num_rows == 0:
            raise UserError(f"text: {shown} has no records")
    return datasets.load_dataset(kind, data_files=[str(source)], split="train", streaming=True)


def _check_field(ds: Any, text_field: str, shown: str) -> None:
    """A UserError unless the records have a string field `text_field`."""
    features = ds.features
    if features is None:  # a JSON reader that has not looked yet: the first record decides
        first = next(iter(ds), None)
        if first is None:
            raise UserError(f"text: {shown} has no records")
        fields = {k: ("string" if isinstance(v, str) or v is None else type(v).__name__)
                  for k, v in first.items()}
    else:
        fields = {k: getattr(v, "dtype", type(v).__name__) for k, v in features.items()}
    if text_field not in fields:
        raise UserError(f"text: {shown} has no field {text_field!r}; its fields: "
                        f"{', '.join(fields)} (set text_field)")
    if fields[text_field] not in STRING_TYPES:
        texts = [k for k, t in fields.items() if t in STRING_TYPES]
        hint = f"; text fields: {', '.join(texts)}" if texts else "; it has no text field"
        raise UserError(f"text: field {text_field!r} of {shown} holds {fields[text_field]}, "
                        f"not text{hint}")


def documents(source: Path, kind: str, text_field: str, shown: str) -> Iterator[bytes]:
    """The UTF-8 bytes of each record's `text_field`, in order, read a batch at a time."""
    import pyarrow as pa

    nulls = rows = 0
    try:
        ds = _open(source, kind, shown)
        _check_field(ds, text_field, shown)
        column = ds.select_columns([text_field]).with_format("arrow")
        for table in column.iter(batch_size=BATCH_ROWS):
            # As bytes straight from Arrow's UTF-8 buffers: no decoding to str and back.
            texts = table.column(text_field).cast(pa.large_binary()).to_pylist()
            rows += len(texts)
            nulls += texts.count(None)
            yield from (t for t in texts if t is not None)
    except (pa.ArrowException, ValueError) as err:  # a file its reader cannot parse
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"text: cannot read {shown} as {kind}: {first}") from None
    if rows == 0:
        raise UserError(f"text: {shown} has no records")
    if nulls:
        warnings.warn(f"text: skipped {nulls} record(s) of {shown} with no {text_field!r}",
                      stacklevel=3)


def joined(docs: Iterator[bytes]) -> Iterator[bytes]:
    """The pieces of the documents joined with DOC_SEPARATOR (none after the last)."""
    for i, doc in enumerate(docs):
        if i:
            yield DOC_SEPARATOR
        yield doc


def write_jsonl(path: str | Path, texts: Iterable[str], text_field: str = "text") -> int:
    """Write each of `texts` as one JSON line `{text_field: text}` (UTF-8): a data-set file the
    text task reads as those documents. Needs only the standard library. The number written."""
    import json

    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for text in texts:
            out.write(json.dumps({text_field: text}, ensure_ascii=False) + "\n")
            n += 1
    return n


class Spill:
    """An append-only unnamed temporary file whose contents end up memory-mapped."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="scalelab-text-")
        self.size = 0

    def write(self, data: bytes | np.ndarray) -> tuple[int, int]:
        """Append `data`; its (start, end) byte offsets."""
        start = self.size
        self._file.write(data)
        self.size += len(data) if isinstance(data, bytes) else data.nbytes
        return start, self.size

    def array(self, dtype: type = np.uint8) -> np.ndarray:
        """The contents as a copy-on-write memory map (writable, as torch wants; writes stay
        private); the file itself goes away with the map."""
        self._file.flush()
        try:
            if self.size == 0:
                return np.empty(0, dtype=dtype)
            return np.memmap(self._file, dtype=dtype, mode="c")
        finally:
            self._file.close()
