"""Observers of a study's events (DESIGN.md): mirrors to trackers, never the record."""
