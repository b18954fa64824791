"""The second task a study's rungs are fine-tuned on: `--on`, its default, and the fit check.

`--on` takes (first match wins):

- `stdlib-test` (the default): this Python's standard-library `test/` folder as a byte-level
  `text` task on its `.py` files (`{name: text, path: "{stdlib}/test", extensions: [.py]}`). The
  default study's `pycode` task leaves every `test/` folder out, so these ~800 files (~17 MB here)
  are unseen: the same language in a shifted style (test code: asserts, fixtures, literals). Where
  the folder is missing (some distributions strip it) this is one line naming `--on`.
- a task name of the registry with its defaults (`pycode`, `digits`);
- an inline YAML mapping of a task, as in a spec
  (`'{name: text, path: notes/, extensions: [.md]}'`);
- a `.yaml` / `.yml` file holding such a mapping (or a spec whose `task:` is one);
- anything else is a path (a file, a folder or a glob): a byte-level `text` task on it.

The task is built with the study's family's context (a GPT's block size), so sequence lengths
always match. It must fit the study's model (`check_compatible`): the same input kind and shape,
and for language models the same vocabulary (size, and the same BPE when both are BPE): a token
id must mean the same thing in both tasks. A BPE `text` second task of a BPE study reuses the
study's own `tokenizer.json`. Classifier and regression studies may change the number of outputs
(and between classification and regression): the model gets a new head.

Each second task has a short `slug` used in fine-tune names: `stdlib-test`, the task name, or
`text-<folder or file name>`.
"""

from __future__ import annotations

import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scalelab.errors import UserError

DEFAULT_ON = "stdlib-test"
STDLIB_TEST = {"name": "text", "path": "{stdlib}/test", "extensions": [".py"]}
ON_HELP = ("stdlib-test (default), a task name, an inline YAML task mapping, a .yaml file, or a "
           "path (file, folder or glob) of text")


@dataclass
class SecondTask:
    """A parsed `--on`: the task's spec mapping (name plus options) and its slug."""

    spec: dict
    slug: str
    source: str


def stdlib_test_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]) / "test"


def _slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "task"


def _path_slug(path: str) -> str:
    parts = [p for p in Path(path.replace("{stdlib}", "stdlib")).parts
             if not any(c in p for c in "*?[")]
    stem = Path(parts[-1]).stem if parts else "text"
    return f"text-{_slugify(stem)}"


def _from_mapping(data: Any, source: str) -> SecondTask:
    if isinstance(data, dict) and "task" in data and isinstance(data["task"], dict):
        data = data["task"]
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise UserError(f"--on {source}: a task mapping needs a 'name' (e.g. "
                        "{name: text, path: notes/})")
    spec = dict(data)
    if spec == STDLIB_TEST:
        return SecondTask(spec, DEFAULT_ON, source)
    slug = _path_slug(str(spec["path"])) if spec["name"] == "text" and "path" in spec \
        else _slugify(spec["name"])
    return SecondTask(spec, slug, source)


def parse_on(on: str | None) -> SecondTask:
    """The second task named by `--on` (see the module docstring). Reads files only."""
    from scalelab.tasks import REGISTRY

    text = (on or DEFAULT_ON).strip()
    if not text:
        raise UserError(f"--on is empty; give {ON_HELP}")
    if text == DEFAULT_ON:
        folder = stdlib_test_dir()
        if not folder.is_dir():
            raise UserError(f"this Python has no standard-library test/ folder ({folder}); "
                            "name a second task with --on (a folder of text, a task name or a "
                            "YAML task mapping)")
        return SecondTask(dict(STDLIB_TEST), DEFAULT_ON, text)
    if text in REGISTRY:
        return SecondTask({"name": text}, _slugify(text), text)
    if text.startswith("{"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--on {text}: malformed YAML mapping") from None
        return _from_mapping(data, text)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            raise UserError(f"--on {text}: cannot read a YAML task mapping from it") from None
        return _from_mapping(data, text)
    return SecondTask({"name": "text", "path": text}, _path_slug(text), text)


def build_task(second: SecondTask, family: Any, study: dict, folder: Path) -> Any:
    """The task object, built as `scalelab run` builds a study's task (the family's context).
    A BPE text task of a BPE text study reuses the study's tokenizer.json; its vocabulary is
    checked against the study's before anything is trained."""
    from scalelab.tasks import get_task

    options = {k: v for k, v in second.spec.items() if k != "name"}
    name = second.spec["name"]
    io = (study.get("corpus") or {}).get("io") or {}
    vocab = io.get("vocab_size")
    if name == "text" and vocab is not None:
        # A tokenizer_file's vocabulary is known once it is loaded (check_compatible).
        wanted = {"bpe": options.get("vocab_size"), "file": None}.get(
            options.get("tokenizer", "bytes"), 256)
        if wanted is not None and wanted != vocab:
            raise UserError(f"the second task's vocabulary ({wanted} tokens) does not match the "
                            f"study's model ({vocab} tokens); a token id must mean the same in "
                            "both tasks")
        study_task = (study.get("spec") or {}).get("task") or {}
        if options.get("tokenizer") == "bpe" and study_task.get("tokenizer") == "bpe" \
                and not options.get("tokenizer_dir"):
            options["tokenizer_dir"] = str(study_task.get("tokenizer_dir") or folder)
    return get_task(name, context=family.context, **options)


def check_compatible(task: Any, family: Any, study: dict) -> None:
    """One UserError line when the second task cannot be fed to the study's models."""
    from scalelab.models.base import check_fit
    from scalelab.tasks.base import describe_io

    check_fit(family, task.io, second_name(task))
    corpus = study.get("corpus") or {}
    io = corpus.get("io")
    objective = corpus.get("objective")
    if not io:
        raise UserError("the study did not record its task's inputs; it cannot be fine-tuned "
                        "(rerun it with this scalelab)")
    mine = task.io
    shape = tuple(io.get("input_shape") or ())
    if mine.kind != io.get("kind") or tuple(mine.input_shape) != shape:
        raise UserError(f"the second task gives {describe_io(task)}, but the study's models take "
                        f"{_describe(io)}; the input kind and shape must match")
    if objective == "lm" or task.objective == "lm":
        if objective != task.objective:
            raise UserError(f"the second task's objective ({task.objective}) differs from the "
                            f"study's ({objective}); a language model fine-tunes on language "
                            "modelling only")
        if mine.vocab_size != io.get("vocab_size"):
            raise UserError(f"the second task's vocabulary ({mine.vocab_size} tokens) does not "
                            f"match the study's model ({io.get('vocab_size')} tokens); a token "
                            "id must mean the same in both tasks")
        theirs = corpus.get("tokenizer_sha256")
        ours = task.fingerprint().get("tokenizer_sha256")
        if theirs and ours and theirs != ours:
            raise UserError("the second task's BPE differs from the study's (same size, other "
                            "merges); use the study's tokenizer.json (tokenizer_dir)")


def new_head(task: Any, study: dict) -> bool:
    """Classifier and regression families get a new output layer for the second task."""
    return (study.get("corpus") or {}).get("objective") != "lm"


def second_name(task: Any) -> str:
    return getattr(task, "name", type(task).__name__)


def _describe(io: dict) -> str:
    shape = io.get("input_shape") or []
    if io.get("kind") == "sequence":
        return (f"sequences of {shape[0] if shape else '?'} tokens "
                f"(vocabulary {io.get('vocab_size')})")
    if io.get("kind") == "vector":
        return f"vectors of {shape[0] if shape else '?'} features"
    return f"images {'x'.join(map(str, shape))}"


__all__ = ["DEFAULT_ON", "ON_HELP", "STDLIB_TEST", "SecondTask", "build_task",
           "check_compatible", "new_head", "parse_on", "stdlib_test_dir"]
