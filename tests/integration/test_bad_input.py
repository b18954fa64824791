"""Bad input for tasks and families: one clear line on stderr, exit code 2, and a study already
recorded in the --out folder is left exactly as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import scalelab, scalelab_each, tiny_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "tests" / "data" / "v1_study"


def _digits(**family) -> dict:
    return tiny_spec(task={"name": "digits"}, family={"name": "mlp", **family},
                     ladder={"sizes": [1e3, 3e3]}, train={"tokens": 640})


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _cases(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    good_rows = "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(40))
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "one.txt").write_text("tiny text " * 2000)
    (tmp_path / "mod_not_module.py").write_text("def make(width):\n    return width\n")
    return {
        "no target column": (
            tiny_spec(task={"name": "tabular", "target": "y",
                            "path": str(_write_csv(tmp_path / "a.csv", "x,z,c\n" + good_rows))},
                      family={"name": "mlp"}),
            "no column 'y'"),
        "non-numeric cell": (
            tiny_spec(task={"name": "tabular", "target": "y", "path": str(_write_csv(
                tmp_path / "b.csv", "x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30))
                + "oops,1\n"))}, family={"name": "mlp"}),
            "oops"),
        "one row": (
            tiny_spec(task={"name": "tabular", "target": "y",
                            "path": str(_write_csv(tmp_path / "c.csv", "x,y\n1,0\n"))},
                      family={"name": "mlp"}),
            "row"),
        "empty folder": (tiny_spec(task={"name": "text", "path": str(empty)}), "no files"),
        "factory not importable": (
            _digits(name="custom", factory="no_such_module_xyz:make"), "cannot import"),
        "factory returns no module": (
            _digits(name="custom", factory="mod_not_module:make"), "int"),
        "family does not fit task": (
            tiny_spec(family={"name": "cnn"}), "does not fit task"),
        "bpe vocabulary too large": (
            tiny_spec(task={"name": "text", "path": str(tmp_path / "one.txt"),
                            "tokenizer": "bpe", "vocab_size": 5000}), "vocab"),
    }


CASE_NAMES = ["no target column", "non-numeric cell", "one row", "empty folder",
              "factory not importable", "factory returns no module", "family does not fit task",
              "bpe vocabulary too large"]


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict[str, tuple]:
    """Each case run in a folder of its own with --out a folder already holding a recorded
    (v1) study (`scalelab_each`: one process each): {case: (process, needle, the recorded
    study's files before, after)}."""
    folders, argvs, needles, before = [], [], [], []
    for case in CASE_NAMES:
        folder = tmp_path_factory.mktemp("bad-input")
        spec, needle = _cases(folder)[case]
        if spec["family"].get("name") not in (None, "gpt"):
            spec["family"].pop("block_size", None)
        recorded = folder / "study"
        shutil.copytree(V1, recorded)
        folders.append(folder)
        argvs.append(["run", write_spec(folder / "spec.yaml", spec), "--out", recorded])
        needles.append(needle)
        before.append(_files(recorded))
    procs = scalelab_each(*argvs, cwd=folders)
    return {case: (proc, needle, files, _files(folder / "study"))
            for case, proc, needle, files, folder
            in zip(CASE_NAMES, procs, needles, before, folders, strict=True)}


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_and_changes_nothing(case, refused):
    proc, needle, before, after = refused[case]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle.lower() in lines[0].lower(), lines[0]
    assert after == before


def test_binary_file_in_a_text_folder_is_skipped_with_one_warning(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(6):
        (folder / f"f{i}.txt").write_text(f"file {i}: " + "some words of text. " * 400)
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 40)
    spec = write_spec(tmp_path / "s.yaml", tiny_spec(
        task={"name": "text", "path": str(folder), "val_fraction": 0.3},
        ladder={"sizes": [3e3]}, train={"tokens": 2048}))
    proc = scalelab("run", spec, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "binary" in line]
    assert len(warned) == 1 and "skipped 1 binary" in warned[0]


def test_corrupt_v1_database_is_one_line_and_left_as_is(tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(V1, folder)
    db = folder / "study.db"
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\x13" * (4096 - 100)  # scribble over the schema pages
    db.write_bytes(bytes(data))
    for proc in scalelab_each(["report", folder], ["compress", folder, "--methods", "fp16"],
                              cwd=tmp_path):
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert db.read_bytes() == bytes(data)
