"""Session fixtures shared across test packages: studies trained once for the whole run (a test
that changes one works on a copy: `tests.helpers.copy_study`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import scalelab, two_rung_spec, write_spec


@pytest.fixture(scope="session")
def two_rung_study(tmp_path_factory) -> Path:
    """A finished 2-rung GPT study (`two_rung_spec`) trained through the real CLI, never
    compressed or fine-tuned: the compression and fine-tuning packages copy it before changing
    it, so one training serves both."""
    root = tmp_path_factory.mktemp("two-rung")
    spec = write_spec(root / "spec.yaml", two_rung_spec())
    scalelab("run", spec, "--out", root / "study", check=True)
    return root / "study"
