"""The guide and docs/: the spec reference is current, links resolve, no path leaves the clone."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from scalelab.docs_spec import description, keys, render

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) with a relative target; http(s), mailto and in-page anchors are not files.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_spec_reference_is_current() -> None:
    """docs/spec.md is what `python -m scalelab.docs_spec` prints: regenerate it after changing
    spec.py (the command is in the file's first lines)."""
    assert (ROOT / "docs" / "spec.md").read_text() == render(), \
        "docs/spec.md is stale: python -m scalelab.docs_spec > docs/spec.md"


def test_every_spec_key_is_described() -> None:
    blank = [path for path, field in keys() if not description(path, field)]
    assert not blank, f"spec keys without a description (spec.py Field or docs_spec.NOTES): {blank}"


def _anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link names a file of the repository, and its #anchor a heading there."""
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or not path.is_relative_to(ROOT):
            missing.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            missing.append(target)
    assert not missing, f"{page.name}: links to missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_path_outside_the_repository(page: Path) -> None:
    """A clone has no ../shared (the development checkout's sibling): data paths are tests/data/."""
    assert "../shared" not in page.read_text(), f"{page.name} names a path outside the repository"


def test_readme_is_a_guide() -> None:
    """The README is the package's PyPI page and a newcomer's first read: it stays short, keeps
    the two set-up commands CI relies on, and sends the rest to docs/."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "make study" in text and "make test" in text
    assert "docs/method.md" in text and "docs/results.md" in text


def _cli_options() -> dict[str, set[str]]:
    """Each command of the real CLI with the options it accepts."""
    import typer

    from scalelab.cli import app

    group = typer.main.get_command(app)
    return {name: {"--help"} | {opt for p in cmd.params for opt in p.opts if opt.startswith("--")}
            for name, cmd in group.commands.items()}


def _command_lines(text: str) -> list[str]:
    """Every `scalelab ...` invocation in a page: lines of code blocks (continuations joined,
    comments dropped) and inline code spans."""
    lines = []
    # Python blocks hold `from scalelab import ...`, not commands.
    for lang, block in re.findall(r"```([a-z]*)\n(.*?)```", text, flags=re.S):
        if lang == "python":
            continue
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line.split(" # ")[0])
    lines += re.findall(r"`([^`\n]*scalelab [a-z][^`\n]*)`", text)
    return [m.group(0) for line in lines
            for m in [re.search(r"\bscalelab [a-z].*", line)] if m]


def test_documented_commands_exist() -> None:
    """Every command and option the guide and docs show is one the CLI accepts: a renamed option
    cannot leave the docs teaching one that fails."""
    options = _cli_options()
    wrong = []
    for page in PAGES:
        for line in _command_lines(page.read_text()):
            words = line.split()
            command = words[1]
            if command not in options:
                wrong.append(f"{page.name}: {line}")
                continue
            for opt in re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", line):
                if opt not in options[command]:
                    wrong.append(f"{page.name}: {opt} in {line}")
    assert not wrong, "\n".join(wrong)


def _readme_csv_commands() -> list[list[str]]:
    """The README's commands on the CSVs shipped in tests/data (its second quick start)."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == ".venv/bin/scalelab" and words[1] in ("fit", "predict",
                                                                               "optimal"):
                found.append(words[1:])
    return found


@pytest.mark.slow  # three fits with a bootstrap, one with a profile: about 25 s on 2 cores
def test_readme_csv_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second quick start works as printed from a clone: the CSVs it names are in the
    repository and each command exits 0, the files one writes being there for the next."""
    from typer.testing import CliRunner

    from scalelab.cli import app

    commands = _readme_csv_commands()
    assert len(commands) >= 4, commands
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"scalelab {' '.join(args)}:\n{result.output}"
    assert (tmp_path / "rpj.json").exists() and (tmp_path / "fit.json").exists()
