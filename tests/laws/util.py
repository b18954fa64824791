"""Shared pieces of the law tests: the reference data and a way to run the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import DATA

CHINCHILLA = DATA / "chinchilla_epoch_svg_extracted.csv"  # Epoch's CSV: see tests/data/README.md
# The replication's "replicate exactly" fit of that CSV and its 95% intervals (the README's table).
EPOCH_EXACT = {"A": 477.84, "B": 2143.86, "E": 1.8172, "alpha": 0.34731, "beta": 0.36718}
EPOCH_FINAL = {"A": 482.01, "B": 2085.43, "E": 1.8169, "alpha": 0.34781, "beta": 0.36585}
EPOCH_INTERVALS = {"A": (285.2, 743.6), "B": (1042.4, 5810.3), "E": (1.769, 1.871),
                   "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real entry point (`python -m scalelab` runs the console script's `main`)."""
    return subprocess.run([sys.executable, "-m", "scalelab", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
# The keys of every holdout record (scalelab.records.Holdout), whatever the rule.
# The last five: the largest size's prediction, the keys the study's holdout had before there
# was one shape for every rule.
HOLDOUT_KEYS = {"rule", "n_fit", "n_test", "max_fit_size", "points", "folds", "mean_rel_error",
                "mean_abs_rel_error", "params", "on_bound",
                "x", "predicted", "measured", "rel_error", "interval"}
