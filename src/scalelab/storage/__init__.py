"""Where a study's records live: the contract (`base.StudyStorage`), the SQLite store of a study
folder (`sqlite.StudyStore`, with its lock), its schema versions and upgrades (`migrations`),
and an in-memory store with the same contract (`memory.MemoryStore`)."""

from scalelab.storage.base import StudyStorage
from scalelab.storage.memory import MemoryStore
from scalelab.storage.migrations import SCHEMA_VERSION
from scalelab.storage.sqlite import StudyLock, StudyStore

__all__ = ["SCHEMA_VERSION", "MemoryStore", "StudyLock", "StudyStorage", "StudyStore"]
