"""A tiny real study, trained and compressed once through the real CLI for the whole package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.compress.spec_helpers import METHODS, compress_spec
from tests.helpers import scalelab, write_spec


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """Folder of a 2-rung study with every kind of variant of its largest rung (rung 1)."""
    root = tmp_path_factory.mktemp("compress-study")
    spec = write_spec(root / "spec.yaml", compress_spec())
    folder = root / "study"
    scalelab("run", spec, "--out", folder, check=True)
    scalelab("compress", folder, "--methods", METHODS, check=True)
    return folder


@pytest.fixture(scope="session")
def summary(study) -> dict:
    return json.loads((study / "summary.json").read_text())


@pytest.fixture(scope="session")
def variants(summary) -> dict[str, dict]:
    return {v["name"]: v for v in summary["variants"]}
