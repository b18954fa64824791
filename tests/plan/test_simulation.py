"""The plan's simulation: its batched fit is the study's fit, its spread matches a closed form,
and from the default study's record it gives the figures docs/results.md reports.

data/default_study/summary.json holds the default study's rungs (losses, FLOPs, seconds) and
fitted law as `scalelab run` recorded them at commit 29abc23 (the fields a plan reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from scalelab.laws.fit import Law
from scalelab.laws.forms import get_form
from scalelab.laws.noise import repeat_noise
from scalelab.plan import Ladder, assumed_noise, from_study, simulate
from scalelab.plan.simulation import draw, exact_fit, fit_batch, simulate_many, study_weights

DEFAULT_STUDY = Path(__file__).parent / "data" / "default_study"
SMALL = (12768.0, 28368.0, 56640.0, 100096.0, 155840.0)  # the default study's 6x-check sizes
LARGEST = 1003104.0


def _law(E: float, A: float, alpha: float) -> Law:
    return Law.from_summary({"law": "power", "params": {"E": E, "A": A, "alpha": alpha}})


def test_study_weights_are_repeat_noise_weights():
    law = _law(0.5, 8.0, 0.2)
    x, ly = draw(Ladder(SMALL, 4, 60000.0), assumed_noise(law, 0.01), 5, seed=3)
    w = study_weights(x, ly)
    for row, wr in zip(ly, w, strict=True):
        np.testing.assert_allclose(wr, repeat_noise(x, np.exp(row)).weights, rtol=1e-10)


def test_batched_fit_is_the_study_fit():
    """Each synthetic ladder's prediction at the target from the plan's batch equals the one
    `Law.fit` gives it (the study's fit: grid of starts, polish, noise weights)."""
    src = from_study(DEFAULT_STUDY)
    x, ly = draw(Ladder(SMALL, 3), src.noise, 6, seed=1)
    thetas = fit_batch(src.noise.law, x, ly, study_weights(x, ly))
    batch = get_form("power").predict(thetas, np.log([[LARGEST]]))[:, 0]
    exact = [exact_fit(x, row).predict([LARGEST]).point[0] for row in ly]
    np.testing.assert_allclose(batch, exact, rtol=2e-5)


def test_ladders_batched_together_get_their_own_results():
    """A ladder simulated beside others (other sizes, other seeds) gets what it gets alone.
    Odd seeds a size: with an even number the nearly-L1 fit is not unique (any law between each
    size's two seeds has the same objective), and which of those equal optima a fit ends at
    depends on the last bits of its path (docs/plan.md)."""
    noise = assumed_noise(_law(0.5, 8.0, 0.2), 0.01)
    alone = simulate(Ladder(SMALL, 3), noise, 1e6, sims=50, seed=4)
    together = simulate_many([Ladder(SMALL[:4], 3), Ladder(SMALL, 3), Ladder(SMALL, 5)], noise,
                             1e6, sims=50, seed=4)
    np.testing.assert_allclose(together[1].errors, alone.errors, rtol=0, atol=1e-6)


def test_spread_matches_the_closed_form():
    """A law with E well inside its bounds and noise far below the Huber delta (1e-3): the fit is
    least squares and, at this noise, linear in the noise, so the error at the target is
    Gaussian with sd sigma·sqrt(j_t' (J'J)^-1 j_t) (J: d log L / d params at the runs). The
    simulated sd and P(|error| <= that sd) must match within what 2,000 draws allow."""
    E, A, alpha, sigma, target = 1.0, 20.0, 0.3, 1e-4, 3e6
    law = _law(E, A, alpha)
    sizes = np.geomspace(1e4, 3e5, 6)

    def jac(n: np.ndarray) -> np.ndarray:
        power = A * n ** -alpha
        loss = E + power
        return np.column_stack([E / loss, power / loss, -power * np.log(n) / loss])

    J, jt = jac(sizes), jac(np.array([target]))[0]
    sd = sigma * float(np.sqrt(jt @ np.linalg.solve(J.T @ J, jt)))
    sims = 2000
    out = simulate(Ladder(tuple(sizes), 1), assumed_noise(law, sigma), target,
                   tolerance=sd, sims=sims, seed=0)
    assert abs(out.errors.std() / sd - 1) < 3 / np.sqrt(2 * sims)  # se of an sd: sd/sqrt(2n)
    p = 2 * NormalDist().cdf(1.0) - 1  # 0.683
    assert abs(out.p_within - p) < 3 * np.sqrt(p * (1 - p) / sims)
    assert abs(out.errors.mean()) < 3 * sd / np.sqrt(sims)


def test_default_study_figures():
    """docs/results.md, from a simulation of a known law with the default ladder's 5 small
    sizes: at 1% noise per run the 6x prediction is within 2% 37% of the time with one run a
    size and 56% with 3; and from redraws of the study's seeds, 0.73 with 2 repeats. The plan's
    simulation from the default study's record gives each within 0.1."""
    src = from_study(DEFAULT_STUDY)
    one_pct = assumed_noise(src.noise.law, 0.01)
    sims = 600
    p1, p3 = (o.p_within for o in simulate_many([Ladder(SMALL, 1), Ladder(SMALL, 3)], one_pct,
                                                 LARGEST, sims=sims, seed=0))
    assert abs(p1 - 0.37) <= 0.1 and abs(p3 - 0.56) <= 0.1, (p1, p3)
    measured = simulate_many([Ladder(SMALL, r) for r in (2, 4, 6)], src.noise, LARGEST,
                             sims=sims, seed=0)
    p2, p4, p6 = (o.p_within for o in measured)
    assert abs(p2 - 0.73) <= 0.1, p2
    # More seeds a size: a surer law (the redraws' 0.85 and 0.89 at 4 and 5 are higher still:
    # docs/plan.md says why).
    assert p2 < p4 < p6, (p2, p4, p6)
    assert measured[2].errors.std() < measured[0].errors.std()


@pytest.mark.parametrize("noise", [None, 0.01])
def test_from_study_reads_law_noise_and_cost(noise):
    src = from_study(DEFAULT_STUDY, noise)
    data = json.loads((DEFAULT_STUDY / "summary.json").read_text())
    assert src.noise.law.params_["alpha"] == pytest.approx(data["fits"][0]["params"]["alpha"])
    assert src.measured[0] == 12768 and src.measured[-1] == LARGEST
    if noise is None:  # the seed noise of the five repeated sizes, shrunk toward the pooled
        assert src.noise.source == "measured" and len(src.noise.sizes) == 5
        assert 0.008 < src.noise.record["sigma"] < 0.011
    else:
        assert src.noise.source == "assumed" and src.noise.sigma_at([1e6])[0] == 0.01
    # the cost model reproduces each rung's measured FLOPs within 6%
    for rung in data["rungs"]:
        assert src.cost.run_flops(rung["n_nonembed"]) == pytest.approx(rung["flops"], rel=0.06)


def test_a_prior_law_takes_the_presets_spec_and_6nd():
    from scalelab.plan import from_prior

    src = from_prior(DEFAULT_STUDY, 0.01)
    assert src.noise.source == "assumed" and src.measured == []
    assert src.spec["name"] == "default" and src.spec["train"]["tokens_exponent"] == 0.5
    n = 1e5
    assert src.cost.run_flops(n) == pytest.approx(6 * n * src.cost.d_rule(n))
