"""Write the example CSVs from data sets that ship inside scikit-learn (no download).

    python examples/data/make_csvs.py

breast_cancer.csv: Wisconsin diagnostic breast cancer (569 rows, 30 numeric features, target
`diagnosis`: malignant or benign), classification.
diabetes.csv: diabetes progression (442 rows, 10 features, target `progression`, a number),
regression; the raw (unscaled) features, with `sex` (coded 1 or 2 in the source, which does
not say which is which) written as a category, group1 or group2.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sklearn.datasets import load_breast_cancer, load_diabetes

HERE = Path(__file__).parent


def write(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    bc = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bc.feature_names]
    write(HERE / "breast_cancer.csv", [*names, "diagnosis"],
          [[f"{v:g}" for v in x] + [bc.target_names[y]] for x, y in zip(bc.data, bc.target,
                                                                       strict=True)])
    db = load_diabetes(scaled=False)
    names = list(db.feature_names)
    rows = []
    for x, y in zip(db.data, db.target, strict=True):
        row = [f"{v:g}" for v in x]
        row[names.index("sex")] = f"group{int(x[names.index('sex')])}"  # coded 1 or 2
        rows.append([*row, f"{y:g}"])
    write(HERE / "diabetes.csv", [*names, "progression"], rows)


if __name__ == "__main__":
    main()
