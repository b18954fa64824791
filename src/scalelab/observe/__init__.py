"""Observers of a study's events (docs/method.md, "The flow of a study"): mirrors to trackers,
never the record."""
