"""Session fixtures shared across test packages: studies trained once for the whole run (a test
that changes one works on a copy: `tests.helpers.copy_study`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import scalelab, two_rung_spec, write_spec

# Under pytest-xdist (`make test` runs two workers on two cores) each worker and every process it
# starts trains on one thread: two workers of two threads each on two cores oversubscribe them,
# and torch's OpenMP threads then wait on each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
# The CLI prints at 160 columns when its output is not a terminal, and at $COLUMNS when that is
# set: pytest-xdist sets it to 80 in its workers, which would wrap the lines tests look for.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


def pytest_collection_modifyitems(items):
    """Modules with slow tests run first, each module's tests in their own order: `make test`'s
    xdist workers take modules in this order as they free up, so the long ones start early and
    short ones fill the end, rather than one worker finishing a 2-minute module alone."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)  # stable


@pytest.fixture(scope="session")
def two_rung_study(tmp_path_factory) -> Path:
    """A finished 2-rung GPT study (`two_rung_spec`) trained through the real CLI, never
    compressed or fine-tuned: the compression and fine-tuning packages copy it before changing
    it, so one training serves both."""
    root = tmp_path_factory.mktemp("two-rung")
    spec = write_spec(root / "spec.yaml", two_rung_spec())
    scalelab("run", spec, "--out", root / "study", check=True)
    return root / "study"
