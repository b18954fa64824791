"""The `text` task: files, splits, windows, byte and BPE tokens, and every bad-input line."""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from scalelab.errors import UserError
from scalelab.tasks import get_task, text
from scalelab.tasks.text import TextTask

CONTEXT = 8


def make(context: int | None = CONTEXT, **options) -> TextTask:
    return TextTask(TextTask.Options(**options), context)


def body(name: str, lines: int = 12) -> bytes:
    return "".join(f"{name} line {i}: the quick brown fox jumps\n" for i in range(lines)).encode()


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


TEXT_FILES = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt", "sub/g.md"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Seven text files, two binary ones and a hidden folder."""
    files = {rel: body(rel) for rel in TEXT_FILES}
    files["image.bin"] = b"GIF89a\0\0\1\2" + bytes(range(256))
    files["latin1.txt"] = "caf\xe9 cr\xe8me\n".encode("latin-1")  # not UTF-8
    files[".git/config"] = b"[core]\n"
    return write(tmp_path / "corpus", files)


def test_folder_split_is_by_hash_of_the_relative_path(corpus: Path):
    with pytest.warns(UserWarning) as caught:
        task = make(path=str(corpus), val_fraction=0.5)
    assert [str(w.message) for w in caught] == [
        f"text: skipped 2 binary file(s) under {corpus} (e.g. image.bin)"]
    # the rule, computed here: first digest byte < round(0.5 * 256) = 128 -> validation
    val = [r for r in TEXT_FILES if hashlib.sha256(r.encode()).digest()[0] < 128]
    assert val == ["a.txt", "c.txt"]
    train = [r for r in TEXT_FILES if r not in val]
    assert bytes(task.val.tolist()) == b"".join(body(r) + b"\n\n" for r in val)
    assert bytes(task.train.tolist()) == b"".join(body(r) + b"\n\n" for r in train)
    assert task.train.dtype == torch.uint8
    fp = task.fingerprint()
    digest = hashlib.sha256()
    for rel in sorted(TEXT_FILES):
        digest.update(rel.encode() + b"\0" + body(rel))
    assert fp["sha256"] == digest.hexdigest()
    assert (fp["files"], fp["train_files"], fp["val_files"], fp["skipped_binary"]) == (7, 5, 2, 2)
    assert fp["bytes"] == fp["tokens"] == task.train.numel() + task.val.numel()
    assert (fp["tokenizer"], fp["vocab_size"], fp["split"], fp["context"]) == ("bytes", 256,
                                                                              "files", CONTEXT)
    assert task.unit == "byte" and task.bytes_per_token == 1.0
    assert task.io.kind == "sequence" and task.io.input_shape == (CONTEXT,)
    assert task.io.n_outputs == task.io.vocab_size == 256


def test_each_split_keeps_a_file(tmp_path: Path):
    two = write(tmp_path / "two", {"one.txt": body("one"), "two.txt": body("two")})
    # digest bytes: one.txt 75, two.txt 165; 0.05 -> 13 buckets: none -> the smallest digest
    task = make(path=str(two), val_fraction=0.05)
    assert bytes(task.val.tolist()) == body("one") + b"\n\n"
    three = write(tmp_path / "three", {"a.txt": body("a"), "c.txt": body("c"),
                                       "y.py": body("y")})
    # digest bytes: a 24, c 79, y.py 70; 0.95 -> 243 buckets: all -> the largest goes to train
    task = make(path=str(three), val_fraction=0.95)
    assert bytes(task.train.tolist()) == body("c") + b"\n\n"
    assert task.fingerprint()["val_files"] == 2


def test_one_file_splits_at_the_tail_on_a_character_boundary(tmp_path: Path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(bytes(range(32, 127)) * 10 + b"\n" * 50)  # 1000 bytes
    task = make(path=str(plain), val_fraction=0.1)
    data = plain.read_bytes()
    assert bytes(task.val.tolist()) == data[900:] and bytes(task.train.tolist()) == data[:900]
    assert task.fingerprint()["split"] == "tail"
    # a two-byte character straddling the cut: the cut moves forward past it
    accented = tmp_path / "accented.txt"
    data = b"a" * 899 + "é".encode() + b"b" * 99  # 1000 bytes; bytes 899-900 are one character
    accented.write_bytes(data)
    task = make(path=str(accented), val_fraction=0.1)
    assert bytes(task.train.tolist()) == data[:901] and bytes(task.val.tolist()) == data[901:]


def test_extensions_and_globs(tmp_path: Path):
    root = write(tmp_path / "src", {"x.py": body("x"), "y.py": body("y"), "z.PY": body("z"),
                                    "notes.txt": body("notes"), "deep/w.py": body("w")})
    by_ext = make(path=str(root), extensions=["py"], val_fraction=0.5)
    assert by_ext.fingerprint()["files"] == 4  # x.py, y.py, z.PY, deep/w.py
    assert by_ext.options.extensions == [".py"]
    # a glob's paths are relative to its literal prefix, so it splits like the folder does
    by_glob = make(path=str(root / "**" / "*.[pP]*"), val_fraction=0.5)
    assert by_glob.fingerprint()["files"] == 4
    assert torch.equal(by_glob.train, by_ext.train) and torch.equal(by_glob.val, by_ext.val)
    assert by_glob.fingerprint()["sha256"] == by_ext.fingerprint()["sha256"]
    one = make(path=str(root / "*.txt"))  # a glob matching one file: the tail split
    assert one.fingerprint()["split"] == "tail"


def test_batches_and_eval_windows(corpus: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = make(path=str(corpus), val_fraction=0.5)
    x1, y1 = task.batch(4, torch.Generator().manual_seed(3))
    x2, y2 = task.batch(4, torch.Generator().manual_seed(3))
    assert x1.shape == y1.shape == (4, CONTEXT) and x1.dtype == y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    starts = torch.randint(0, task.train.numel() - CONTEXT - 1, (4,),
                           generator=torch.Generator().manual_seed(3))
    assert torch.equal(x1[:, 0], task.train[starts].long())
    xv, yv = task.eval_data(10 * CONTEXT, "val")
    assert xv.shape == yv.shape == (10, CONTEXT) and xv.dtype == torch.int64
    last = task.val.numel() - CONTEXT - 1
    assert torch.equal(xv[0], task.val[:CONTEXT].long())
    assert torch.equal(yv[-1], task.val[last + 1:].long())  # the last window reaches the end
    assert torch.equal(task.eval_data(10 * CONTEXT)[0], xv)  # fixed
    xt, _ = task.eval_data(3 * CONTEXT + 5, "train")
    assert xt.shape == (3, CONTEXT) and torch.equal(xt[0], task.train[:CONTEXT].long())
    with pytest.raises(ValueError, match="split must be"):
        task.eval_data(64, "test")
    ex = task.example_input(3)
    assert ex.shape == (3, CONTEXT) and ex.dtype == torch.int64 and int(ex.max()) < 256
    assert task.units_per_batch(4) == 4 * CONTEXT


def uniform_lm(vocab: int) -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab))
    torch.nn.init.zeros_(model[1].weight)
    torch.nn.init.zeros_(model[1].bias)
    return model


def test_evaluate_gives_loss_and_bits_per_byte(tmp_path: Path):
    path = write(tmp_path, {"t.txt": body("t", 20)}) / "t.txt"
    task = make(path=str(path))
    model = uniform_lm(256)  # equal logits: ln 256 nats, exactly 8 bits per byte
    out = task.evaluate(model, torch.device("cpu"), 256)
    assert set(out) == {"loss", "bpb"} and task.metrics == ("bpb",)
    assert out["loss"] == pytest.approx(math.log(256))
    assert out["bpb"] == pytest.approx(8.0)
    trained = torch.nn.Sequential(torch.nn.Embedding(256, 8), torch.nn.Linear(8, 256))
    assert all(math.isfinite(v) for v in task.evaluate(trained, torch.device("cpu"), 64).values())


def test_default_context_and_decoding(tmp_path: Path):
    path = write(tmp_path, {"t.txt": body("t", 40)}) / "t.txt"
    task = make(context=None, path=str(path))
    assert task.context == 64 and task.io.input_shape == (64,)
    assert task.decode(task.encode("héllo")) == "héllo"


VAL_FILES = [5, 6]  # m5.py and m6.py: digest bytes < round(0.3 * 256)


def bpe_corpus(folder: Path) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "return", "value", "index", "scale", "model"]
    files = {}
    for f in range(8):
        lines = [f"def {words[i % 9]}_{words[(i + f) % 9]}(x):\n    return x * {i} + {f}\n"
                 for i in range(40)]
        files[f"m{f}.py"] = "".join(lines).encode()
    return write(folder, files)


def test_bpe_is_trained_on_train_saved_and_reused(tmp_path: Path, monkeypatch):
    root = bpe_corpus(tmp_path / "code")
    tok_dir = tmp_path / "study"
    opts = dict(path=str(root), tokenizer="bpe", vocab_size=300, tokenizer_dir=str(tok_dir),
                val_fraction=0.3)
    task = make(**opts)
    saved = tok_dir / "tokenizer.json"
    assert saved.is_file()
    assert task.unit == "token" and task.vocab_size == 300
    assert task.io.n_outputs == task.io.vocab_size == 300
    assert task.train.dtype == torch.int32 and int(task.train.max()) < 300
    assert task.tokenizer.get_vocab_size() == 300
    fp = task.fingerprint()
    assert fp["val_tokens"] == task.val.numel() and fp["tokenizer"] == "bpe"
    assert task.bytes_per_token == fp["val_bytes"] / fp["val_tokens"] > 1.5  # merges happened
    val_text = task.decode(task.val.tolist())
    assert val_text.encode() == b"".join(  # the validation files, decoded back exactly
        (root / f"m{f}.py").read_bytes() + b"\n\n" for f in VAL_FILES)
    # trained on the train split only: the train text gives this vocabulary, all the text not
    train_text = task.decode(task.train.tolist())
    assert text.train_bpe([train_text], 300).get_vocab() == task.tokenizer.get_vocab()
    assert text.train_bpe([train_text, val_text], 300).get_vocab() != task.tokenizer.get_vocab()
    # resume: the saved file is read, nothing is trained again, the ids are the same
    text._load.cache_clear()
    monkeypatch.setattr(text, "train_bpe", lambda *a, **k: pytest.fail("retrained"))
    resumed = make(**opts)
    assert torch.equal(resumed.train, task.train) and torch.equal(resumed.val, task.val)
    assert resumed.fingerprint()["tokenizer_sha256"] == fp["tokenizer_sha256"]
    x, y = resumed.batch(2, torch.Generator().manual_seed(0))
    assert x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
    out = resumed.evaluate(uniform_lm(300), torch.device("cpu"), 128)
    assert out["loss"] == pytest.approx(math.log(300))
    assert out["bpb"] == pytest.approx(math.log2(300) / task.bytes_per_token)
    with pytest.raises(UserError, match=r"has a vocabulary of 300, not vocab_size 299"):
        make(**{**opts, "vocab_size": 299})


def test_bpe_vocabulary_larger_than_the_corpus_supports(tmp_path: Path):
    root = bpe_corpus(tmp_path / "code")
    tok_dir = tmp_path / "study"
    with pytest.raises(UserError) as err:
        make(path=str(root), tokenizer="bpe", vocab_size=50_000, tokenizer_dir=str(tok_dir))
    message = str(err.value)
    assert message.startswith("text: BPE vocab_size 50000 is more than the train split supports")
    assert "\n" not in message
    assert not (tok_dir / "tokenizer.json").exists()


def test_options_are_checked():
    with pytest.raises(ValidationError, match="required with tokenizer: bpe"):
        TextTask.Options(path="x", tokenizer="bpe")
    with pytest.raises(ValidationError, match="must be more than 256"):
        TextTask.Options(path="x", tokenizer="bpe", vocab_size=256)
    with pytest.raises(ValidationError, match="applies only to tokenizer: bpe"):
        TextTask.Options(path="x", vocab_size=300)
    with pytest.raises(ValidationError):
        TextTask.Options(path="x", val_fraction=1.0)
    with pytest.raises(ValidationError, match="list at least one suffix"):
        TextTask.Options(path="x", extensions=[])
    with pytest.raises(UserError, match="unknown key"):
        get_task("text", context=8, path="x", tokeniser="bpe")


def test_the_registry_builds_it(tmp_path: Path):
    path = write(tmp_path, {"t.txt": body("t", 20)}) / "t.txt"
    task = get_task("text", context=16, path=str(path))
    assert isinstance(task, TextTask) and task.io.input_shape == (16,)


def one_line_error(**options) -> str:
    with pytest.raises(UserError) as err:
        make(**options)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_inputs_are_one_clear_line(tmp_path: Path):
    missing = tmp_path / "nope"
    assert one_line_error(path=str(missing)) == f"text: {missing} does not exist"
    (tmp_path / "empty").mkdir()
    assert one_line_error(path=str(tmp_path / "empty")) == f"text: folder {tmp_path / 'empty'} " \
        "has no files"
    pattern = str(tmp_path / "*.nothing")
    assert one_line_error(path=pattern) == f"text: no file matches {pattern}"
    write(tmp_path / "bin", {"a.bin": b"\0\1\2", "b.bin": b"\xff\xfe"})
    with pytest.warns(UserWarning, match="skipped 2 binary"):
        message = one_line_error(path=str(tmp_path / "bin"))
    assert message == f"text: no text files under {tmp_path / 'bin'} (2 binary skipped)"
    write(tmp_path / "mixed", {"a.txt": body("a")})
    assert one_line_error(path=str(tmp_path / "mixed"), extensions=["md", ".rst"]) == \
        f"text: no file under {tmp_path / 'mixed'} ends in .md, .rst"
    small = write(tmp_path, {"small.txt": b"0123456789" * 10}) / "small.txt"  # val: 5 bytes
    assert one_line_error(path=str(small)) == (
        f"text: {small} is too small for windows of 8 tokens: train has 95 tokens, "
        "validation 5 (need 10 in each)")
