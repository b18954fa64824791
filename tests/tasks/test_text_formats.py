"""The `text` task on data-set files (JSONL, Parquet, Arrow, a saved `datasets` folder): the same
tokens as the same text in a .txt file, streamed or not, offline; a local tokenizer.json; every
bad input one line through the real CLI; a tiny study on a JSONL file end to end."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from scalelab.errors import UserError
from scalelab.tasks import text
from scalelab.tasks.text import TextTask
from scalelab.tasks.text_files import write_jsonl
from tests.helpers import scalelab, scalelab_each, tiny_spec, write_spec

pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")

CONTEXT = 8
FORMATS = ["jsonl", "parquet", "arrow", "saved"]


def documents(n: int = 40, tag: str = "doc") -> list[str]:
    """Documents with newlines and multi-byte characters (é: 2 bytes, ∑: 3, 🙂: 4)."""
    return [f"{tag} {i}: café ∑ 🙂 the quick brown fox\njumps over line {i % 7}" for i in range(n)]


def write_format(folder: Path, fmt: str, docs: list[str], name: str = "data") -> Path:
    """`docs` as one data-set file (or saved folder) of kind `fmt`, with a second column."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": list(range(len(docs))), "text": docs})
    if fmt == "jsonl":
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n"
                                for i, d in enumerate(docs)))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        path = folder / f"{name}.parquet"
        pq.write_table(table, path, row_group_size=7)  # several row groups
    elif fmt == "arrow":
        path = folder / f"{name}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            for batch in table.to_batches(max_chunksize=7):
                w.write_batch(batch)
    else:
        import datasets

        path = folder / name
        datasets.Dataset.from_dict(table.to_pydict()).save_to_disk(str(path))
    return path


def make(context: int = CONTEXT, **options) -> TextTask:
    return TextTask(TextTask.Options(**options), context)


def tokens(task: TextTask) -> tuple[list[int], list[int]]:
    return task.train.tolist(), task.val.tolist()


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_gives_the_tokens_of_the_same_text_file(tmp_path: Path, fmt: str,
                                                             tokenizer: str):
    docs = documents()
    plain = tmp_path / "plain.txt"
    plain.write_text("\n\n".join(docs), encoding="utf-8")  # documents joined by a blank line
    bpe = {"vocab_size": 300} if tokenizer == "bpe" else {}
    want = make(path=str(plain), tokenizer=tokenizer, val_fraction=0.2, **bpe)
    got = make(path=str(write_format(tmp_path / fmt, fmt, docs)), tokenizer=tokenizer,
               val_fraction=0.2, **bpe)
    assert tokens(got) == tokens(want)
    assert got.vocab_size == want.vocab_size and got.bytes_per_token == want.bytes_per_token
    fp = got.fingerprint()
    assert fp["sha256"] != want.fingerprint()["sha256"]  # it names the source: a file or a folder
    assert (fp["split"], fp["text_field"]) == ("tail", "text")
    assert fp["format"] == {"jsonl": "json", "saved": "saved"}.get(fmt, fmt)


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_streaming_gives_the_tokens_of_the_in_memory_path(tmp_path: Path, monkeypatch,
                                                          tokenizer: str):
    # Small chunks, so BPE chunks and streamed reads cut through multi-byte characters.
    monkeypatch.setattr(text, "CHUNK_CHARS", 50)
    bpe = {"vocab_size": 300} if tokenizer == "bpe" else {}
    one = write_format(tmp_path / "one", "parquet", documents(60))
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(4):
        write_jsonl(shards / f"part-{i}.jsonl", documents(15, tag=f"shard{i}"))
    for path, split in ((one, "tail"), (shards, "files")):
        kept = make(path=str(path), tokenizer=tokenizer, val_fraction=0.3, streaming=False, **bpe)
        streamed = make(path=str(path), tokenizer=tokenizer, val_fraction=0.3, streaming=True,
                        **bpe)
        assert tokens(streamed) == tokens(kept)
        assert streamed.fingerprint() == kept.fingerprint()
        assert kept.fingerprint()["split"] == split
        if tokenizer == "bpe":
            assert streamed.tokenizer.to_str() == kept.tokenizer.to_str()
        assert streamed.train.dtype == kept.train.dtype
        x, y = streamed.batch(4, torch.Generator().manual_seed(0))
        assert x.shape == (4, CONTEXT) and torch.equal(x[:, 1:], y[:, :-1])


def test_large_data_set_files_are_streamed_by_default(tmp_path: Path, monkeypatch):
    path = write_format(tmp_path, "jsonl", documents())
    assert not text._source(TextTask.Options(path=str(path))).streaming
    monkeypatch.setattr(text, "STREAM_BYTES", path.stat().st_size - 1)
    assert text._source(TextTask.Options(path=str(path))).streaming
    plain = tmp_path / "plain.txt"
    plain.write_text("x" * 10_000)
    assert not text._source(TextTask.Options(path=str(plain))).streaming


def test_reading_never_touches_the_network(tmp_path: Path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for fmt in FORMATS:
        task = make(path=str(write_format(tmp_path / fmt, fmt, documents(), name=f"n-{fmt}")))
        assert task.train.numel() > 0


def test_text_field_and_format_options(tmp_path: Path):
    docs = documents()
    path = tmp_path / "content.json"  # JSON lines in a .json file: a text file unless told
    write_jsonl(path, docs, text_field="content")
    task = make(path=str(path), format="json", text_field="content", val_fraction=0.2)
    plain = tmp_path / "plain.txt"
    plain.write_text("\n\n".join(docs), encoding="utf-8")
    assert tokens(task) == tokens(make(path=str(plain), val_fraction=0.2))
    as_text = make(path=str(path), val_fraction=0.2)  # auto: .json is plain text
    assert bytes(as_text.train.tolist() + as_text.val.tolist()) == path.read_bytes()


def test_nulls_are_skipped_with_one_warning(tmp_path: Path):
    path = tmp_path / "nulls.jsonl"
    docs = documents()
    path.write_text("".join(json.dumps({"text": d if i % 10 else None}) + "\n"
                            for i, d in enumerate(docs)))
    with pytest.warns(UserWarning) as caught:
        task = make(path=str(path), val_fraction=0.2)
    assert [str(w.message) for w in caught] == [
        f"text: skipped 4 record(s) of {path} with no 'text'"]
    kept = [d for i, d in enumerate(docs) if i % 10]
    assert bytes(task.train.tolist() + task.val.tolist()).decode() == "\n\n".join(kept)


def test_a_local_tokenizer_json_is_used_as_it_is(tmp_path: Path):
    from tokenizers import processors

    plain = tmp_path / "plain.txt"
    plain.write_text("\n\n".join(documents()), encoding="utf-8")
    trained = make(path=str(plain), tokenizer="bpe", vocab_size=300, val_fraction=0.2)
    tok = trained.tokenizer
    tok.add_special_tokens(["<s>"])  # a BOS its post-processor adds: the task must not
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 300)])
    folder = tmp_path / "tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    data = write_format(tmp_path, "jsonl", documents())
    for where in (folder, folder / "tokenizer.json"):
        task = make(path=str(data), tokenizer="file", tokenizer_file=str(where), val_fraction=0.2)
        assert tokens(task) == tokens(trained)
        assert task.vocab_size == 301 and task.unit == "token"
        assert task.fingerprint()["tokenizer"] == "file"
    with pytest.raises(UserError, match="no tokenizer.json there"):
        make(path=str(data), tokenizer="file", tokenizer_file=str(tmp_path))


def test_the_writer_round_trips(tmp_path: Path):
    docs = ["one\nline", 'quotes " and \\ ', "naïve 🙂"]
    assert write_jsonl(tmp_path / "w.jsonl", docs) == 3
    rows = [json.loads(line) for line in (tmp_path / "w.jsonl").read_text().splitlines()]
    assert rows == [{"text": d} for d in docs]


def _bad_cases(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    fields = tmp_path / "fields.jsonl"
    fields.write_text("".join(json.dumps({"content": d, "id": i}) + "\n"
                              for i, d in enumerate(documents())))
    (tmp_path / "empty.jsonl").touch()
    (tmp_path / "data.csv").write_text("content\n" + "a line of text\n" * 50)
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_jsonl(mixed / "a.jsonl", documents())
    (mixed / "b.txt").write_text("plain text " * 100)
    import datasets

    ds = datasets.Dataset.from_dict({"text": documents()})
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dict"))

    def task(**options) -> dict:
        return {"name": "text", **options}

    return {
        "missing field": (task(path=str(fields)),
                          f"text: {fields} has no field 'text'; its fields: content, id "
                          "(set text_field)"),
        "non-text column": (task(path=str(fields), text_field="id"),
                            f"text: field 'id' of {fields} holds int64, not text; "
                            "text fields: content"),
        "empty file": (task(path=str(tmp_path / "empty.jsonl")),
                       f"text: {tmp_path / 'empty.jsonl'} is empty"),
        "unknown extension": (task(path=str(tmp_path / "data.csv"), text_field="content"),
                              "text: text_field applies to data-set files (.jsonl, .ndjson, "
                              ".parquet, .arrow, a saved datasets folder), not data.csv"),
        "malformed json": (task(path=str(tmp_path / "broken.jsonl")),
                           f"text: cannot read {tmp_path / 'broken.jsonl'} as json: "),
        "mixed kinds": (task(path=str(mixed)),
                        f"text: {mixed} mixes data-set files (e.g. a.jsonl) with other files "
                        "(e.g. b.txt)"),
        "dataset dict": (task(path=str(tmp_path / "dict")),
                         f"text: {tmp_path / 'dict'} is a saved DatasetDict with the splits "
                         "test, train; point path at one of their folders"),
    }


def test_bad_data_set_input_is_one_line_exit_2_before_the_study_folder(tmp_path: Path):
    cases = _bad_cases(tmp_path)
    argvs, outs = [], []
    for i, (task, _) in enumerate(cases.values()):
        spec = write_spec(tmp_path / f"bad{i}.yaml", tiny_spec(task=task))
        outs.append(tmp_path / f"out{i}")
        argvs.append(["run", spec, "--out", outs[-1]])
    for (case, (_, needle)), proc, out in zip(cases.items(), scalelab_each(*argvs, cwd=tmp_path),
                                              outs, strict=True):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (case, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"error: {needle}"), (case, lines)
        assert not out.exists(), case


def test_a_tiny_study_on_a_jsonl_file(tmp_path: Path):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, (f"document {i}: " + "some words of text, and more words. " * 12
                       for i in range(120)))
    spec = write_spec(tmp_path / "s.yaml", tiny_spec(
        task={"name": "text", "path": "data.jsonl", "val_fraction": 0.1},
        ladder={"sizes": [3e3]}, train={"tokens": 2048}))
    out = tmp_path / "out"
    scalelab("run", spec, "--out", out, cwd=tmp_path, check=True)
    summary = json.loads((out / "summary.json").read_text())
    corpus = summary["study"]["corpus"]
    assert (corpus["format"], corpus["text_field"], corpus["split"]) == ("json", "text", "tail")
    assert corpus["path"] == str(data)  # resolved from the spec's folder
    rungs = summary["rungs"]
    assert len(rungs) == 1 and all(r["status"] == "done" and r["val_bpb"] > 0 for r in rungs)


@pytest.mark.slow
def test_the_benchmark_writes_its_modes(tmp_path: Path):
    import subprocess
    import sys

    out = tmp_path / "formats.json"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "benchmarks/text_formats.py", "--mb", "0.3",
                           "--json", str(out)], cwd=root, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["same_tokens"] and list(result["modes"]) == [
        ".txt (baseline)", "jsonl in memory", "jsonl streamed"]
    assert result["modes"][".txt (baseline)"]["ratio"] == 1.0
    assert all(row["seconds"] > 0 and row["rss_mb"] > 0 for row in result["modes"].values())
    assert "tokens identical in all modes" in proc.stdout
