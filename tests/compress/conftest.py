"""A tiny real study (a copy of the session's trained one), compressed once through the real CLI
for the whole package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.compress.spec_helpers import METHODS
from tests.helpers import copy_study, scalelab


@pytest.fixture(scope="session")
def study(two_rung_study, tmp_path_factory) -> Path:
    """Folder of a 2-rung study (a copy of the session's `two_rung_study`) with every kind of
    variant of its largest rung (rung 1)."""
    folder = copy_study(two_rung_study, tmp_path_factory.mktemp("compress-study") / "study")
    scalelab("compress", folder, "--methods", METHODS, check=True)
    return folder


@pytest.fixture(scope="session")
def summary(study) -> dict:
    return json.loads((study / "summary.json").read_text())


@pytest.fixture(scope="session")
def variants(summary) -> dict[str, dict]:
    return {v["name"]: v for v in summary["variants"]}
