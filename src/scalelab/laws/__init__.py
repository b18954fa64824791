"""Scaling laws: forms, robust multistart fitting, bootstrap intervals, holdout, optimal N/D.

Quick use::

    from scalelab.laws import Law, holdout, optimal_allocation
    law = Law("chinchilla", bootstrap=1000).fit(X, y)   # X: (n, 2) columns N, D; y: loss
    law.params_, law.intervals(), law.predict([[7e10, 1.4e12]])
    holdout(law, X, y, "largest:1")        # a Holdout record (scalelab.records); .to_dict()
    optimal_allocation(law, 5.76e23)

The study calls `fit_study_power` (a `FitRecord` as a dict) and draws bands with `predict_band`.

One engine for every source of runs (`laws.engine`): `fit_ladder(rows, two_axis=...)` gives
the records a study stores, and `scalelab fit` gives the same for a study folder or a CSV::

    from scalelab.laws import fit_ladder, two_axis_rows
    rows = two_axis_rows("runs.csv", x=["params", "tokens"])   # IsoFLOP budgets recovered
    (record,) = fit_ladder(rows, two_axis=True)                  # the fit.json of `scalelab fit`

The whole of `scalelab fit`, `predict` and `optimal` (`laws.fitfile`, `laws.answers`)::

    from scalelab.laws import FitOptions, fit_runs, optimal_rows, predict_rows
    result = fit_runs("runs.csv", FitOptions(x=["N"], profile=True))  # a CSV or a study folder
    result.to_dict()                     # the fit.json of `scalelab fit`; result.write(path)
    predict_rows(result.to_dict(), x=[1e9]).rows
    optimal_rows("fit.json", [5.76e23]).rows   # a fit.json, a CSV over N and D, or a study

Which law answers is chosen by an inner holdout (`laws.selection`): every candidate fitted
without the largest fitted size or budget and judged on it; the record keeps each candidate's
inner and outer holdout under "candidates".
`Holdout` is the one record of every holdout rule (largest:K, smallest:K, below:V, loso);
`Holdout.from_dict` also reads the older shapes stored by earlier studies.

How far a law can be trusted: `extrapolation_profile(law, X, y)` fits every split (sizes up to
x_k) and records the error of its predictions of the larger sizes against x / x_k, with the
noise-implied band of each error; `horizon_text` says the trust horizon in words. The noise
comes from repeats of a size (`repeat_noise`: seeds or folds), which also weigh the fit
(`Law.fit(X, y, sample_weight)`), or from the residuals (`residual_noise`).
"""

from scalelab.laws.answers import (
    Allocation,
    PredictionTable,
    budgets_for,
    optimal_rows,
    predict_rows,
    read_fit,
)
from scalelab.laws.engine import fit_ladder, two_axis_rows
from scalelab.laws.fit import Law, Prediction
from scalelab.laws.fitfile import FitOptions, FitResult, fit_runs
from scalelab.laws.forms import FORMS, Form, get_form
from scalelab.laws.noise import repeat_noise, residual_noise
from scalelab.laws.optimal import frontier, optimal_allocation
from scalelab.laws.profile import extrapolation_profile, horizon_text, trust_horizon
from scalelab.laws.study import fit_study_power, fit_study_record, predict_band
from scalelab.laws.validate import compare_forms, holdout, leave_one_size_out, size_groups
from scalelab.records import FitRecord, Holdout

__all__ = [
    "FORMS",
    "Allocation",
    "FitOptions",
    "FitRecord",
    "FitResult",
    "Form",
    "Holdout",
    "Law",
    "Prediction",
    "PredictionTable",
    "budgets_for",
    "compare_forms",
    "extrapolation_profile",
    "fit_ladder",
    "fit_runs",
    "fit_study_power",
    "fit_study_record",
    "frontier",
    "get_form",
    "holdout",
    "horizon_text",
    "leave_one_size_out",
    "optimal_allocation",
    "optimal_rows",
    "predict_band",
    "predict_rows",
    "read_fit",
    "repeat_noise",
    "residual_noise",
    "size_groups",
    "trust_horizon",
    "two_axis_rows",
]
