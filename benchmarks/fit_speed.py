"""Time the 4,500-start Chinchilla fit: scalelab's batched L-BFGS vs a SciPy loop.

Both sides fit L(N, D) = E + A/N^alpha + B/D^beta to the same 240 runs by minimizing the sum of
Huber(1e-3) of log residuals from every start of the Epoch replication's grid (4,500 starts), keep
the best, and must reach the same optimum (E, A, B, alpha, beta within 0.1%). The SciPy side is
one scipy.optimize.minimize(method="L-BFGS-B") per start, one start after another; --baseline
picks how that loop is written:

  replication (default)  the replication's own straightforward code (Besiroglu et al. 2024,
                         epoch-research/analyzing-chinchilla, data_analysis.ipynb), reproduced
                         operation for operation: parameters in its order (a, b, e, alpha, beta);
                         log L = np.log(np.exp(a - alpha·log N) + np.exp(b - beta·log D)
                         + np.exp(e)) on the raw N, D (logs taken inside every call); Huber via
                         np.where, summed; no bounds; finite-difference gradients; a start counts
                         only if result.success. (It does not use scipy.special.logsumexp or
                         scipy.special.huber.) This is the "straightforward SciPy implementation"
                         of the reference data's README.
  numpy                  a hand-vectorized objective (precomputed log N, log D, log L; max-shifted
                         log-sum-exp) in scalelab's log-space parameters with scalelab's bounds;
                         finite-difference gradients. A faster baseline than the replication's
                         code (it differs in precomputing the logs and in having bounds), so it
                         gives a smaller ratio.
  analytic               as numpy, but with scalelab's analytic gradient (Objective.scalar),
                         so SciPy does one objective call per evaluation instead of six.

Measured on the 2-core development machine (SciPy 1.17.1, NumPy 2.4.6), all 4,500 starts, no
extrapolation, four runs of the current code: replication 54-62 s vs ours 0.76-0.90 s (each a
median of 5), ratios 64x to 81x; on the last, 54.6 s vs 0.79 s, 69x. Both reached the reference
optimum (E 1.8172, A ~478, B ~2143, alpha 0.34731, beta 0.3672). Timings on a shared machine
move by +-20% or so from run to run; the JSON's "ratio" is the measurement.

    python benchmarks/fit_speed.py [--json OUT] [--baseline replication|numpy|analytic]
                                   [--scipy-starts N]

With --scipy-starts N < 4500 the SciPy loop runs on a random subset of N starts and its time is
extrapolated to 4,500 (linearly in starts); the output says so. The default runs all 4,500.
"""

from __future__ import annotations

import os

# One BLAS thread unless the caller says otherwise (set before NumPy loads). SciPy's L-BFGS-B
# calls BLAS/LAPACK on 5x5 matrices every iteration; with several OpenBLAS threads on a busy
# machine each call pays for thread hand-offs, which made the SciPy loop ~6x slower here (numpy
# baseline: 369 s with the default threads vs 59 s with one; a benchmark artifact, not a
# property of the baseline). Our fit parallelizes with its own threads and takes about the same
# time either way (0.71-0.76 s with default threads, 0.76-0.83 s with one, in one comparison).
# Set OPENBLAS_NUM_THREADS yourself to measure another setting.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from scalelab.laws.data import load_dataset  # noqa: E402
from scalelab.laws.fit import fit_multistart  # noqa: E402
from scalelab.laws.forms import get_form  # noqa: E402
from scalelab.laws.objective import Objective  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CSV = DATA / "chinchilla_epoch_svg_extracted.csv"
REPEATS = 5  # timed fits of ours (after one warm-up); the median is reported
SAME_RTOL = 1e-3  # "same optimum": every natural parameter (E, A, B, alpha, beta) within 0.1%

BASELINES = {
    "replication": "the replication's code: np.log/np.exp log-sum-exp on raw N, D, np.where "
                   "Huber, params (a, b, e, alpha, beta), no bounds, finite-difference gradients",
    "numpy": "hand-vectorized NumPy objective, scalelab's parameters and bounds, "
             "finite-difference gradients",
    "analytic": "scalelab's objective with its analytic gradient, scalelab's bounds",
}
# theta = (e, a, b, alpha, beta) in scalelab; the replication orders them (a, b, e, alpha, beta)
_TO_REP = [1, 2, 0, 3, 4]
_FROM_REP = [2, 0, 1, 3, 4]


# --- the replication's procedure, written as it has it ------------------------------------------

def rep_log_sum_exp(a, b, e, alpha, beta, N, D):
    return np.log(np.exp(a - alpha * np.log(N)) + np.exp(b - beta * np.log(D)) + np.exp(e))


def rep_huber_sum(y_true, y_pred, delta=1e-3):
    diff = y_true - y_pred
    small = np.abs(diff) <= delta
    return np.sum(np.where(small, 0.5 * diff**2, delta * (np.abs(diff) - 0.5 * delta)))


def rep_objective(params, N, D, losses):
    a, b, e, alpha, beta = params
    return rep_huber_sum(np.log(losses), rep_log_sum_exp(a, b, e, alpha, beta, N, D))


def replication_loop(starts_rep, N, D, losses):
    """minimize(..., method='L-BFGS-B') per start, no bounds; best successful result."""
    best_f, best_x = np.inf, None
    with np.errstate(over="ignore", invalid="ignore"):  # the notebook's np.seterr(...)
        for x0 in starts_rep:
            res = minimize(rep_objective, list(x0), args=(N, D, losses), method="L-BFGS-B")
            if res.success and res.fun < best_f:
                best_f, best_x = float(res.fun), res.x
    return best_x, best_f


# --- scalelab-side baselines ---------------------------------------------------------------------

def huber_log_objective(theta: np.ndarray, ln, ld, ly, delta: float = 1e-3) -> float:
    """The same objective, hand-vectorized for one parameter vector (scalelab's theta order)."""
    e, a, b, alpha, beta = theta
    u = np.stack([np.full_like(ln, e), a - alpha * ln, b - beta * ld])
    m = u.max(0)
    r = m + np.log(np.exp(u - m).sum(0)) - ly
    ar = np.abs(r)
    return float(np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum())


def bounded_loop(starts, Z, ly, lo, hi, analytic: bool):
    """One bounded L-BFGS-B run per start in scalelab's parameters; the best result."""
    bounds = list(zip(lo, hi, strict=True))
    obj = Objective(get_form("chinchilla"), Z, ly)
    best_f, best_x = np.inf, None
    for x0 in starts:
        if analytic:
            res = minimize(obj.scalar, x0, jac=True, method="L-BFGS-B", bounds=bounds)
        else:
            res = minimize(huber_log_objective, x0, args=(Z[:, 0], Z[:, 1], ly),
                           method="L-BFGS-B", bounds=bounds)
        if res.fun < best_f:
            best_f, best_x = float(res.fun), res.x
    return best_x, best_f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--csv", type=Path, default=CSV, help="the Chinchilla runs (Epoch's CSV)")
    ap.add_argument("--baseline", choices=tuple(BASELINES), default="replication",
                    help="how the SciPy loop is written (see the module docstring)")
    ap.add_argument("--scipy-starts", type=int, default=4500,
                    help="starts the SciPy loop runs (fewer: timed on a subset, extrapolated)")
    args = ap.parse_args(argv)
    if not args.csv.exists():
        print(f"error: {args.csv} not found", file=sys.stderr)
        return 2
    form = get_form("chinchilla")
    ds = load_dataset(args.csv, form, x=["Model Size"], flops="Training FLOP", drop_highest=5)
    Z, ly = np.log(ds.X), np.log(ds.y)
    lo, hi = form.bounds(Z, ly)
    grid = form.grid(Z, ly)

    # Ours takes ~1 s, so one timing is at the mercy of the machine's noise: one warm-up fit
    # (thread pool, first-touch of arrays), then the median of REPEATS timed fits. The SciPy loop
    # runs for a minute or more and is timed once.
    ours = fit_multistart(form, Z, ly)
    ours_times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        ours = fit_multistart(form, Z, ly)
        ours_times.append(time.perf_counter() - t0)
    ours_s = statistics.median(ours_times)

    n_sub = min(max(args.scipy_starts, 1), len(grid))
    subset = grid
    if n_sub < len(grid):
        subset = grid[np.random.default_rng(0).choice(len(grid), n_sub, replace=False)]
    if args.baseline == "replication":
        # the notebook's loop order: product(alpha, beta, e, a, b), start [a, b, e, alpha, beta]
        rep = subset[:, _TO_REP]
        rep = rep[np.lexsort((rep[:, 1], rep[:, 0], rep[:, 2], rep[:, 4], rep[:, 3]))]
        N, D, losses = ds.X[:, 0], ds.X[:, 1], ds.y
        t0 = time.perf_counter()
        x_rep, sp_f = replication_loop(rep, N, D, losses)
        sp_timed = time.perf_counter() - t0
        sp_x = x_rep[_FROM_REP]
    else:
        t0 = time.perf_counter()
        sp_x, sp_f = bounded_loop(subset, Z, ly, lo, hi, args.baseline == "analytic")
        sp_timed = time.perf_counter() - t0
    sp_s = sp_timed * len(grid) / n_sub

    p_ours, p_sp = form.to_params(ours.theta), form.to_params(sp_x)
    rel = np.abs(p_ours - p_sp) / np.abs(p_sp)
    same = bool(np.all(rel <= SAME_RTOL))
    result = {
        "ratio": sp_s / ours_s,
        "baseline": args.baseline,
        "baseline_description": BASELINES[args.baseline],
        "ours_s": ours_s,
        "ours_s_all": ours_times,
        "scipy_s": sp_s,
        "scipy_s_timed": sp_timed,
        "scipy_starts_timed": n_sub,
        "scipy_extrapolated": n_sub < len(grid),
        "scipy_gradient": "analytic" if args.baseline == "analytic" else "finite differences",
        "scipy_bounds": args.baseline != "replication",
        "n_starts": len(grid),
        "n_runs": len(ly),
        "same_optimum": same,
        "same_optimum_rtol": SAME_RTOL,
        "max_param_rel_diff": float(rel.max()),
        "ours": {"objective": ours.objective,
                 "params": dict(zip(form.param_names, map(float, p_ours), strict=True))},
        "scipy": {"objective": sp_f,
                  "params": dict(zip(form.param_names, map(float, p_sp), strict=True))},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": scipy.__version__, "load_avg_1m": os.getloadavg()[0],
                    "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")},
    }
    print(f"{'':<28}{'seconds':>10}  {'objective':>14}  " + "  ".join(
        f"{n:>9}" for n in form.param_names))
    for name, secs, rec in (("scalelab batched L-BFGS", ours_s, result["ours"]),
                            (f"scipy loop ({args.baseline})", sp_s, result["scipy"])):
        print(f"{name:<28}{secs:>10.2f}  {rec['objective']:>14.10g}  "
              + "  ".join(f"{v:>9.5g}" for v in rec["params"].values()))
    note = (f" (timed on {n_sub} of {len(grid)} random starts: {sp_timed:.1f} s, "
            f"extrapolated linearly)" if n_sub < len(grid) else "")
    print(f"scipy loop: {len(grid)} starts, baseline {args.baseline}: "
          f"{BASELINES[args.baseline]}{note}")
    print(f"ratio scipy/ours: {result['ratio']:.1f}x; same optimum (params within "
          f"{SAME_RTOL:.0e}): {same} (max rel diff {rel.max():.2e})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
