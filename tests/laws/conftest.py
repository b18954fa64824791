from __future__ import annotations

from pathlib import Path

import pytest

from tests.laws.util import CHINCHILLA


@pytest.fixture
def chinchilla_csv() -> Path:
    """The Epoch CSV beside the clone (../shared/data); skip cleanly where it is absent."""
    if not CHINCHILLA.exists():
        pytest.skip(f"reference data not found at {CHINCHILLA}")
    return CHINCHILLA
