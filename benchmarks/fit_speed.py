"""Time the 4,500-start Chinchilla fit: scalelab's batched L-BFGS vs a SciPy loop.

Both sides minimize the same objective (sum of Huber(1e-3) of log residuals, log-space
parameters, the same bounds) from the same grid of the Epoch replication, on the same 240 runs,
and must reach the same optimum. The SciPy side is the straightforward implementation the
reference README describes: one scipy.optimize.minimize(method="L-BFGS-B") per start, gradients by
finite differences (--scipy-jac analytic gives it our analytic gradient instead).

    python benchmarks/fit_speed.py [--json OUT] [--scipy-starts N] [--scipy-jac analytic]

With --scipy-starts N < 4500 the SciPy loop runs on a random subset of N starts and its time is
extrapolated to 4,500 (linearly in starts); the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.optimize import minimize

from scalelab.laws.data import load_dataset
from scalelab.laws.fit import fit_multistart
from scalelab.laws.forms import get_form
from scalelab.laws.objective import Objective

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CSV = DATA / "chinchilla_epoch_svg_extracted.csv"
SAME_RTOL = 1e-3  # "same optimum": every parameter within 0.1%


def huber_log_objective(theta: np.ndarray, ln, ld, ly, delta: float = 1e-3) -> float:
    """The replication's objective, written plainly for one parameter vector."""
    e, a, b, alpha, beta = theta
    u = np.stack([np.full_like(ln, e), a - alpha * ln, b - beta * ld])
    m = u.max(0)
    r = m + np.log(np.exp(u - m).sum(0)) - ly
    ar = np.abs(r)
    return float(np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum())


def scipy_loop(starts, Z, ly, lo, hi, analytic: bool):
    """One L-BFGS-B run per start; the best result."""
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
    ap.add_argument("--scipy-starts", type=int, default=4500,
                    help="starts the SciPy loop runs (fewer: timed on a subset, extrapolated)")
    ap.add_argument("--scipy-jac", choices=("numeric", "analytic"), default="numeric")
    args = ap.parse_args(argv)
    if not args.csv.exists():
        print(f"error: {args.csv} not found", file=sys.stderr)
        return 2
    form = get_form("chinchilla")
    ds = load_dataset(args.csv, form, x=["Model Size"], flops="Training FLOP", drop_highest=5)
    Z, ly = np.log(ds.X), np.log(ds.y)
    lo, hi = form.bounds(Z, ly)
    grid = form.grid(Z, ly)

    t0 = time.perf_counter()
    ours = fit_multistart(form, Z, ly)
    ours_s = time.perf_counter() - t0

    n_sub = min(max(args.scipy_starts, 1), len(grid))
    subset = grid
    if n_sub < len(grid):
        subset = grid[np.random.default_rng(0).choice(len(grid), n_sub, replace=False)]
    t0 = time.perf_counter()
    sp_x, sp_f = scipy_loop(subset, Z, ly, lo, hi, args.scipy_jac == "analytic")
    sp_timed = time.perf_counter() - t0
    sp_s = sp_timed * len(grid) / n_sub

    p_ours, p_sp = form.to_params(ours.theta), form.to_params(sp_x)
    rel = np.abs(p_ours - p_sp) / np.abs(p_sp)
    same = bool(np.all(rel <= SAME_RTOL))
    result = {
        "ratio": sp_s / ours_s,
        "ours_s": ours_s,
        "scipy_s": sp_s,
        "scipy_s_timed": sp_timed,
        "scipy_starts_timed": n_sub,
        "scipy_extrapolated": n_sub < len(grid),
        "scipy_gradient": "finite differences" if args.scipy_jac == "numeric" else "analytic",
        "n_starts": len(grid),
        "n_runs": len(ly),
        "same_optimum": same,
        "max_param_rel_diff": float(rel.max()),
        "ours": {"objective": ours.objective,
                 "params": dict(zip(form.param_names, map(float, p_ours), strict=True))},
        "scipy": {"objective": sp_f,
                  "params": dict(zip(form.param_names, map(float, p_sp), strict=True))},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": scipy.__version__, "load_avg_1m": os.getloadavg()[0]},
    }
    print(f"{'':<28}{'seconds':>10}  {'objective':>14}  " + "  ".join(
        f"{n:>9}" for n in form.param_names))
    for name, secs, rec in (("scalelab batched L-BFGS", ours_s, result["ours"]),
                            ("scipy L-BFGS-B loop", sp_s, result["scipy"])):
        print(f"{name:<28}{secs:>10.2f}  {rec['objective']:>14.10g}  "
              + "  ".join(f"{v:>9.5g}" for v in rec["params"].values()))
    note = (f" (timed on {n_sub} of {len(grid)} random starts: {sp_timed:.1f} s, "
            f"extrapolated linearly)" if n_sub < len(grid) else "")
    print(f"scipy loop: {len(grid)} starts, {result['scipy_gradient']} gradients{note}")
    print(f"ratio scipy/ours: {result['ratio']:.1f}x; same optimum (params within "
          f"{SAME_RTOL:.0e}): {same} (max rel diff {rel.max():.2e})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
