from __future__ import annotations

from pathlib import Path

import pytest

from tests.laws.util import CHINCHILLA


@pytest.fixture
def chinchilla_csv() -> Path:
    """The Epoch CSV kept in the repository (tests/data); a missing file is a failure."""
    assert CHINCHILLA.exists(), f"reference data missing: {CHINCHILLA} (see tests/data/README.md)"
    return CHINCHILLA
