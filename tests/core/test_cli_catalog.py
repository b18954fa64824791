"""`scalelab list` and `scalelab --version`, through the real entry point."""

from __future__ import annotations

import re
from importlib import metadata

from typer.testing import CliRunner

from scalelab import catalog
from scalelab.cli import app
from scalelab.compress.base import REGISTRY as METHODS
from scalelab.laws.forms import FORMS
from scalelab.models import REGISTRY as FAMILIES
from scalelab.spec import PRESETS
from scalelab.tasks import REGISTRY as TASKS
from tests.helpers import scalelab


def _row(out: str, option: str) -> list[str]:
    """The cells of the option row `option` (the first one printed)."""
    line = next(li for li in out.splitlines() if re.match(rf"\s+{re.escape(option)}\s", li))
    return line.split()


def test_list_families_names_each_family_with_its_options_and_defaults():
    proc = scalelab("list", "families", check=True)
    out = proc.stdout
    for name in FAMILIES:
        assert re.search(rf"^  {name}  ", out, re.M), name
    assert _row(out, "block_size")[:3] == ["block_size", "int", "64"]  # gpt's own default
    assert _row(out, "factory")[:3] == ["factory", "str", "required"]  # custom's, no default
    assert "tasks" not in out.splitlines()  # only the kind asked for


def test_list_without_a_kind_lists_every_registry():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert [li for li in out.splitlines() if li in catalog.KINDS] == list(catalog.KINDS)
    for names in (TASKS, FAMILIES, METHODS, PRESETS, FORMS):
        for name in names:
            assert re.search(rf"^  {re.escape(name)}  ", out, re.M), name
    assert _row(out, "target")[:3] == ["target", "str", "required"]  # tabular's option
    assert "default list: prune:0.25, prune:0.5, prune:0.5+ft" in out
    assert "L(N, D) = E + A/N^alpha + B/D^beta" in out


def test_catalog_reads_the_options_models():
    from scalelab.tasks.text import TextTask

    text = {o.name: o for o in next(e for e in catalog.catalog("tasks")
                                    if e.name == "text").options}
    assert set(text) == set(TextTask.Options.model_fields)
    assert text["tokenizer"].type == "'bytes' | 'bpe' | 'file'"
    assert text["tokenizer"].default == "bytes"
    assert text["path"].required and not text["val_fraction"].required
    default = next(e for e in catalog.catalog("presets") if e.name == "default")
    assert {o.name: o.default for o in default.options}["ladder.repeats"] == 6


def test_a_bad_kind_is_one_line_and_exit_2():
    proc = scalelab("list", "widgets")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: unknown kind 'widgets'; choose from tasks, families, "
                                   "methods, presets, laws, executors")
    assert proc.stdout == ""


def test_version_is_the_installed_package_version():
    proc = scalelab("--version", check=True)
    assert proc.stdout.strip() == f"scalelab {metadata.version('scalelab')}"
