"""Plan a ladder before it trains: the sizes and seeds whose law lands within a tolerance at a
target size, chosen by simulation against a budget (`scalelab plan`).

    from scalelab.plan import from_study, make_plan, shape_realizer
    src = from_study("runs/default")
    plan = make_plan(src.noise, 6e6, cost=src.cost, smallest=src.measured[0],
                     realize=shape_realizer(src.spec), budget=2e14)

`plan.simulation` draws and fits the synthetic ladders, `plan.search` lists the candidates and
chooses, `plan.source` reads a study or a prior law, `plan.plot` draws the figure;
`plan.two_axis` plans an IsoFLOP ladder for a compute target (`scalelab plan --compute C`).
"""

from scalelab.plan.search import CostModel, Plan, candidate_ladders, make_plan, plan_spec
from scalelab.plan.simulation import Ladder, NoiseModel, assumed_noise, measured_noise, simulate
from scalelab.plan.source import Source, from_prior, from_study, shape_realizer
from scalelab.plan.two_axis import isoflop_spec, make_two_axis_plan, two_axis_source

__all__ = [
    "CostModel",
    "Ladder",
    "NoiseModel",
    "Plan",
    "Source",
    "assumed_noise",
    "candidate_ladders",
    "from_prior",
    "from_study",
    "isoflop_spec",
    "make_plan",
    "make_two_axis_plan",
    "measured_noise",
    "plan_spec",
    "shape_realizer",
    "simulate",
    "two_axis_source",
]
