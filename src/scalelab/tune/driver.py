"""The tuning driver: `scalelab tune` end to end. It runs the default ladder (a study), Optuna
trials per rung through the same executor (search.py), fits the learning-rate rule to the best
trials (rule.py), trains the tuned ladder as a second study and writes tune.json, which the
study's summary and report pick up."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.execute import ExecuteOptions, check_storage
from scalelab.execute.base import Observer, Workload
from scalelab.ladder import plan_ladder
from scalelab.records import RungPlan
from scalelab.spec import StudySpec
from scalelab.storage import StudyStore
from scalelab.study import (
    TUNE_JSON,
    atomic_write,
    canonical_spec,
    resolve,
    run_study,
    storage_root,
    use_executor,
    write_outputs,
)
from scalelab.train import measure
from scalelab.tune.rule import fit_lr_rule, rule_lr
from scalelab.tune.search import (
    TUNE_DB,
    best_trials,
    import_optuna,
    open_studies,
    run_trials,
    seed_with_defaults,
    storage_url,
    trial_plan,
)

TUNED_DIR = "tuned"


def tune_study(
    spec: StudySpec,
    out: Path,
    trials: int | None = None,
    device_name: str | None = None,
    *,
    execute: ExecuteOptions | None = None,
    observers: Sequence[Observer] = (),
    on_plan: Callable[[list[RungPlan]], None] | None = None,
) -> dict:
    """Tune each rung and compare: the default ladder (a study in `out`), Optuna trials per rung
    through the executor (`out/tune.db`), the rule lr*(N) = c·N^gamma fitted to the best
    learning rates, the ladder trained with it (a study in `out/tuned`), and both laws side by
    side (`out/tune.json`, and a section of out/report.html). Rerunning resumes every part."""
    space = spec.tune
    if space is None or not space.searched:
        raise UserError("the spec has no search space: add a tune section, e.g. "
                        "tune: {lr: [3.0e-4, 3.0e-2]} (warmup_frac: [low, high] and "
                        "batch_size: [..] may be searched too)")
    import_optuna()
    out, execute = Path(out), execute or ExecuteOptions()
    with use_executor(None, execute, spec) as ex:
        default = run_study(spec, out, device_name, on_plan=on_plan, execute=execute,
                            executor=ex, observers=observers)
        res = resolve(spec, out=out)
        spec = res.spec  # the budget and lr chosen for the task, as the study stored them
        plans = plan_ladder(spec, res.task, res.family)
        device = str(measure.resolve_device(device_name or spec.device))
        work = Workload(res.task, res.family, spec, device, default["study"]["gemm_peak_flops"])
        root = storage_root(execute, out, canonical_spec(spec)) / "tune"
        check_storage(ex, root)
        url = storage_url(out)
        with StudyStore.open_readonly(out) as store:
            curves = store.curves()
        seed_with_defaults(open_studies(plans, space, url), plans, space, spec.train,
                           {r["rung"]: r for r in default["rungs"]}, curves)
        run_trials(plans, space, trials or space.trials, url, ex, work, root, observers)
        best = best_trials(plans, url)
        rule = _lr_rule(plans, best, space)
        tuned_plans = _tuned_plans(plans, best, rule, work)
        _check_tuned(out / TUNED_DIR, tuned_plans)
        tuned = run_study(spec.model_copy(update={"name": f"{spec.name}-tuned"}),
                          out / TUNED_DIR, device_name, on_plan=on_plan, execute=execute,
                          executor=ex, observers=observers, plans=tuned_plans)
    record = {"trials_per_rung": trials or space.trials, "space": space.model_dump(),
              "storage": TUNE_DB, "rungs": [best[p.rung] for p in plans], "rule": rule,
              "default_rule": {k: getattr(spec.train, k) for k in
                               ("lr", "lr_ref_nonembed", "lr_exponent")},
              "ladders": {"default": _ladder_view(default, "."),
                          "tuned": _ladder_view(tuned, TUNED_DIR)}}
    atomic_write(out / TUNE_JSON, json.dumps(record, indent=2))
    with StudyStore.open_readonly(out) as store:
        summary = write_outputs(store)
    for observer in observers:  # the report again, now with its tuning section
        observer.on_study(out, summary["study"]["spec"])
        observer.on_outputs(out, summary)
    return record


def _lr_rule(plans: list[RungPlan], best: dict[int, dict], space: Any) -> dict | None:
    if space.lr is None:
        return None
    n = [p.n_nonembed for p in plans]
    return fit_lr_rule(n, [best[p.rung]["best"]["params"]["lr"] for p in plans])


def _tuned_plans(plans: list[RungPlan], best: dict[int, dict], rule: dict | None,
                 work: Workload) -> list[RungPlan]:
    """The ladder with the rule's learning rate (a smooth function of N, not each rung's own
    noisy best) and each rung's best warm-up and batch size where those were searched."""
    out = []
    for p in plans:
        params = dict(best[p.rung]["best"]["params"])
        if rule is not None:
            params["lr"] = rule_lr(rule, p.n_nonembed)
        out.append(trial_plan(p, params, work.task.units_per_batch, work.spec.train))
    return out


def _check_tuned(folder: Path, plans: list[RungPlan]) -> None:
    """A tuned ladder already trained with other settings (a rerun with more trials gave
    another rule) is not silently mixed with the new one."""
    if not (folder / "study.db").exists():
        return
    with StudyStore.open_readonly(folder) as store:
        stored = {r["rung"]: r["plan"] for r in store.rungs()}
    for p in plans:
        old = stored.get(p.rung)
        if old is not None and (abs(old["lr"] - p.lr) > 1e-9 * p.lr
                                or old["batch_size"] != p.batch_size
                                or old["warmup_steps"] != p.warmup_steps):
            raise UserError(f"{folder} holds a ladder tuned with other settings (rung {p.rung}: "
                            f"lr {old['lr']:.4g}, now {p.lr:.4g}); remove that folder to train "
                            "the new one")


def _ladder_view(summary: dict, folder: str) -> dict:
    """What the tuning section compares of a ladder: its rungs and its loss law."""
    fit = next((f for f in summary["fits"] if f.get("y", "val_loss") == "val_loss"), None)
    keys = ("rung", "n_nonembed", "lr", "steps", "status", "val_loss")
    view: dict[str, Any] = {"folder": folder, "name": summary["study"]["name"], "fit": None,
                            "rungs": [{k: r.get(k) for k in keys} for r in summary["rungs"]]}
    if fit is not None:
        view["fit"] = {"params": fit["params"], "intervals": fit["intervals"],
                       "flags": fit.get("flags") or [],
                       "on_bound": fit.get("on_bound") or [],
                       "holdout_rel_error": (fit.get("holdout") or {}).get("rel_error")}
    return view
