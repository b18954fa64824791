"""Real data sets of three kinds, written as a user would have them, from data that ships inside
installed packages (no download):

- `rand_hie_csv`: the RAND Health Insurance Experiment (statsmodels' `randhie`, 20,190 rows), a
  regression of outpatient visits with string categories (the health dummies folded back into
  one `health` column, the deductible flag as yes/no);
- `breast_cancer_csv`: 300 rows of scikit-learn's Wisconsin breast cancer table (a
  classification with string labels), with about 5% of the feature cells emptied;
- `RESIDUAL_MLP`: a user's residual-MLP factory module for the `digits` task.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HEALTH = {"hlthg": "good", "hlthf": "fair", "hlthp": "poor"}


def rand_hie_csv(path: Path) -> Path:
    """statsmodels' randhie as a CSV with a categorical `health` and `deductible` column."""
    import statsmodels.datasets.randhie as randhie

    source = Path(randhie.__file__).parent / "randhie.csv"
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["mdvis", "lncoins", "deductible", "lpi", "fmde", "physlm", "disea",
                      "health"])
        for r in rows:
            health = next((name for col, name in HEALTH.items() if r[col] == "1"), "excellent")
            out.writerow([r["mdvis"], r["lncoins"], "yes" if r["idp"] == "1" else "no",
                          r["lpi"], r["fmde"], r["physlm"], r["disea"], health])
    return path


def breast_cancer_csv(path: Path, rows: int = 300, empty: float = 0.05, seed: int = 0) -> Path:
    """`rows` rows of scikit-learn's breast cancer table, `empty` of the feature cells blank."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data.target), size=rows, replace=False))
    blank = rng.random((rows, data.data.shape[1])) < empty
    names = [n.replace(" ", "_") for n in data.feature_names]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*names, "diagnosis"])
        for i, row in enumerate(pick):
            cells = ["" if blank[i, j] else f"{v:g}" for j, v in enumerate(data.data[row])]
            out.writerow([*cells, data.target_names[data.target[row]]])
    return path


# A residual MLP for digits (8x8 images, 10 classes): width k, two residual blocks.
RESIDUAL_MLP = '''
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.norm = nn.LayerNorm(k)
        self.ff = nn.Sequential(nn.Linear(k, 2 * k), nn.GELU(), nn.Linear(2 * k, k))

    def forward(self, x):
        return x + self.ff(self.norm(x))


class ResidualMLP(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.inp = nn.Sequential(nn.Flatten(), nn.Linear(64, k))
        self.blocks = nn.Sequential(Block(k), Block(k))
        self.head = nn.Sequential(nn.LayerNorm(k), nn.Linear(k, 10))

    def forward(self, x):
        return self.head(self.blocks(self.inp(x)))


def make(k):
    return ResidualMLP(k)
'''
