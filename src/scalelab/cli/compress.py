"""Commands on a trained study's models: compress, recommend, export.

Every command checks its input on a read-only view of the study first (bad input: one line, exit
code 2, nothing written), then builds the study's task and family from its stored spec
(`study.resolve`), the same objects `scalelab run` trained with.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from scalelab.cli.app import app, check_device, console, named_progress
from scalelab.cli.study import ADDRESS_OPTION, EXECUTOR_OPTION, MLFLOW_OPTION
from scalelab.compress.base import REGISTRY, get_method
from scalelab.compress.methods import default_methods
from scalelab.errors import UserError


def methods_help() -> str:
    """Each registered method's syntax and summary (its class's own words), as a two-column
    block of 80 characters (an indented block keeps its line breaks in the help)."""
    methods = [get_method(kind) for kind in REGISTRY]
    width = max(len(m.syntax) for m in methods) + 2
    lines = []
    for m in methods:
        wrapped = textwrap.wrap(m.summary, 76 - width, break_on_hyphens=False) or [""]
        lines += [f"    {m.syntax if i == 0 else '':<{width}}{text}"
                  for i, text in enumerate(wrapped)]
    return "\n".join(lines)


COMPRESS_HELP = f"""Make compressed variants of a trained rung, measure them like the rungs \
(validation loss on the same validation data, bytes of the saved file, latency at the study's \
batch sizes, peak memory), store them in study.db and rebuild the report.

Methods (`scalelab list methods` shows what each one's value means, and its defaults):

{methods_help()}

A method that does not apply to the study's family or task is an error. Without
--methods: those of {", ".join(default_methods())} that apply.

Each variant is a job of the executor, as a rung is in `scalelab run`: --executor ray makes \
them side by side as Ray tasks, and --mlflow mirrors each one as a child run of the study's.

Example:

    scalelab compress studies/default --rung largest --methods int8,prune:0.5,distill
"""

RECOMMEND_HELP = """Pick the model to ship: the rung or variant with the LOWEST VALIDATION LOSS \
among those meeting every limit given (latency at --batch, bytes of the saved file, loss). \
Losses equal to within 1e-4 nats are ties, broken by fewer bytes, then lower latency. When nothing \
fits, says so and names the closest model: the smallest summed relative excess over the limits. \
Exit code 0 either way. With --json prints `{"choice": {...} or null, "closest": {...} or null, \
"reason": "...", "frontier": [...], "unstable": [...], ...}`. A model whose latency at --batch is \
flagged unstable (its timed calls stayed spread out when measured a second time: a busy machine) \
is judged on its median as measured and named as such in the answer.

Example:

    scalelab recommend studies/default --max-latency-ms 5 --batch 32 --json
"""

EXPORT_HELP = """Export a rung (the largest finished one unless --rung names another), or one \
of its variants, to ONNX and check that ONNX Runtime \
reproduces the PyTorch logits (max absolute difference printed; an fp32 export must stay under \
1e-3, else exit code 1). An int8 variant is already an ONNX model: it is copied, and its \
difference from the fp32 rung is its quantization error.

A fine-tuned model (`scalelab finetune`) is exported with --finetune NAME: a LoRA or IA3 needs \
--merge, which folds the adapter into the base weights and checks the merged model against the \
adapter model (max absolute logit difference on the second task's validation inputs, computed \
in float64 so that only the merge is judged; over 1e-5 is exit code 1; the float32 difference, \
forward-pass rounding included, is printed beside it); --weights writes the merged (or fully \
fine-tuned) model as safetensors, --onnx as ONNX.

Examples:

    scalelab export studies/default --rung 5 --variant r5-prune0.5 --onnx model.onnx
    scalelab export studies/default --finetune r5-stdlib-test-lora-r16 --merge \\
        --weights merged.safetensors --onnx merged.onnx
"""


def _study_spec(store: Any) -> tuple[dict, Any]:
    """The study record and its parsed spec."""
    from scalelab.spec import parse_spec

    study = store.study()
    if study is None:
        raise UserError(f"{store.folder} has no study recorded")
    return study, parse_spec(study["spec"], f"{store.folder}/study.db spec")


def _objective(study: dict) -> str | None:
    """The task objective recorded with the study (None for studies that did not record it)."""
    return (study.get("corpus") or {}).get("objective")


def _resolve(spec: Any, folder: Path) -> Any:
    """The study's task and family, built from its stored spec as `scalelab run` built them."""
    from scalelab.study import resolve

    return resolve(spec, out=Path(folder))


@app.command(help=COMPRESS_HELP)
def compress(
    folder: Path = typer.Argument(..., help="study folder"),
    rung: str = typer.Option("largest", "--rung", help="rung index, or 'largest'"),
    methods: str | None = typer.Option(
        None, "--methods", help="comma-separated methods (see above) [default: the default "
                                "methods that apply to the study]"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    executor: str = EXECUTOR_OPTION,
    address: str | None = ADDRESS_OPTION,
    mlflow: str | None = MLFLOW_OPTION,
) -> None:
    import torch

    from scalelab.cli.study import execute_options, incomplete_is_exit_1, mirrors, outputs_kept
    from scalelab.compress import compress_study, plan_compress
    from scalelab.storage import StudyStore
    from scalelab.study import use_executor, write_outputs
    from scalelab.train.measure import resolve_device

    check_device(device)
    # Everything is checked on a read-only view first: bad input changes nothing in the study.
    with StudyStore.open_readonly(folder) as ro:
        study, spec = _study_spec(ro)
        plan_compress(ro.rungs(), rung, methods, study["family"], _objective(study))
    dev = resolve_device(device)
    res = _resolve(spec, folder)
    task, family = res.task, res.family
    recorded = (study.get("corpus") or {}).get("sha256")
    if recorded and recorded != task.fingerprint().get("sha256"):
        raise UserError("the task's corpus on this machine differs from the one the study was "
                        "trained on; variants would not be comparable")
    if spec.measure.threads:
        torch.set_num_threads(spec.measure.threads)
    observers = mirrors(mlflow, spec.name)

    with use_executor(None, execute_options(executor, address, None), spec) as ex, \
            StudyStore.create_or_open(folder) as store, incomplete_is_exit_1():
        plan = plan_compress(store.rungs(), rung, methods, family.name, task.objective)
        for observer in observers:  # each variant a child run of the study's MLflow run
            observer.on_study(store.folder, study["spec"])
        with named_progress() as on_progress, outputs_kept(store):
            records = compress_study(store, spec, task, family, dev, plan=plan,
                                     on_event=lambda msg: console.print(msg),
                                     on_progress=on_progress, redo=True, executor=ex,
                                     observers=observers)
        summary = write_outputs(store)
    for observer in observers:  # the fits and report into the study's MLflow run
        observer.on_outputs(store.folder, summary)
    console.print(variant_table(summary, [r.name for r in records]))
    console.print(f"report: {Path(folder) / 'report.html'}")


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def variant_table(summary: dict, names: list[str] | None = None) -> Table:
    """The variants of summary.json (latencies already medians per batch), at batch 1 and the
    largest batch measured: the variant's medians, the base rung's (measured again before it)
    and their ratio, the speedup; `!` marks a latency flagged unstable (`scalelab.latency`)."""
    from scalelab import latency
    from scalelab.compress.base import find_method

    shown = [v for v in summary["variants"] if names is None or v["name"] in names]
    batches = sorted({b for v in shown for b in latency.medians(v.get("latency_ms"))}, key=int)
    big = batches[-1] if batches else "32"
    table = Table(title="variants", title_justify="left",
                  caption=f"! unstable: IQR over {latency.UNSTABLE_IQR:.0%} of the median in "
                          f"each of {latency.MAX_SERIES} measurements", caption_justify="left")
    for col in ("name", "method", "N", "bytes", "val loss", "Δ loss", "lat b1 ms",
                f"lat b{big} ms", f"base b{big} ms", f"speedup b{big}"):
        table.add_column(col, justify="right")
    for v in shown:
        extra = v.get("extra") or {}
        lat = latency.medians(v.get("latency_ms"))
        base = latency.medians(extra.get("base_latency_ms"))
        speed = latency.speedups(base, lat).get(big)
        mark = {b: "!" if latency.flagged(v, b) else "" for b in ("1", big)}
        base_mark = "!" if latency.flagged(extra, big, "base_") else ""
        if not find_method(v["method"]).claims_speedup:
            speed_txt = "not claimed"
        else:
            speed_txt = (_f(speed, ".2f") + ("x" if speed is not None else "")
                         + ("!" if mark[big] or base_mark else ""))
        table.add_row(v["name"], v["method"], _f(v["n_params"], ",d"), _f(v["bytes"], ",d"),
                      _f(v["val_loss"], ".4f"), _f(extra.get("loss_delta"), "+.4f"),
                      _f(lat.get("1"), ".3g") + mark["1"], _f(lat.get(big), ".3g") + mark[big],
                      _f(base.get(big), ".3g") + base_mark, speed_txt)
    return table


@app.command(help=RECOMMEND_HELP)
def recommend(
    folder: Path = typer.Argument(..., help="study folder"),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms",
                                                help="latency limit at --batch, in ms"),
    max_bytes: float | None = typer.Option(None, "--max-bytes",
                                           help="limit on the saved file's bytes"),
    max_loss: float | None = typer.Option(None, "--max-loss",
                                          help="validation loss limit, nats per token"),
    batch: int = typer.Option(1, "--batch", help="batch size of the latency: 1 or 32"),
    as_json: bool = typer.Option(False, "--json", help="print the answer as JSON"),
    task: str | None = typer.Option(
        None, "--task", help="choose among the models fine-tuned on this second task "
                             "(`scalelab finetune`) and the rungs' zero-shot scores on it "
                             "[default: the study's own task]"),
) -> None:
    from scalelab.select import recommend as choose
    from scalelab.storage import StudyStore
    from scalelab.study import build_summary

    with StudyStore.open_readonly(folder) as store:
        summary = build_summary(store)
    result = choose(summary, max_latency_ms, max_bytes, max_loss, batch, task)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    pick = result["choice"] or result["closest"]
    head = "choice" if result["choice"] is not None else "nothing fits; closest"
    lat = (pick.get("latency_ms") or {}).get(str(batch))
    shaky = " [bold red]UNSTABLE[/bold red]" if pick.get("latency_flagged") else ""
    console.print(f"[bold]{head}: {pick['name']}[/bold] ({pick['kind']}, loss "
                  f"{pick['val_loss']:.4f}, {pick['bytes']:,} bytes, latency "
                  f"{_f(lat, '.3g')} ms{shaky} at batch {batch})")
    console.print(result["reason"])
    console.print("Pareto frontier (loss, latency, bytes): " + ", ".join(result["frontier"]))
    if task is None:
        from scalelab.select import finetune_tasks

        others = finetune_tasks(summary)
        if others:
            console.print("fine-tuned models are on their own task's plane: --task "
                          + " or --task ".join(others))


@app.command(help=EXPORT_HELP)
def export(
    folder: Path = typer.Argument(..., help="study folder"),
    rung: str | None = typer.Option(
        None, "--rung", help="rung index, or 'largest' [default: largest, the finished rung "
                             "with the most parameters]"),
    variant: str | None = typer.Option(None, "--variant", help="variant name of that rung"),
    onnx: Path | None = typer.Option(None, "--onnx", help="output .onnx file"),
    finetune: str | None = typer.Option(None, "--finetune",
                                        help="name of a fine-tuned model (scalelab finetune)"),
    merge: bool = typer.Option(False, "--merge", help="merge a LoRA/IA3 into its base weights"),
    weights: Path | None = typer.Option(None, "--weights",
                                        help="fine-tunes: output .safetensors file"),
) -> None:
    if finetune is not None:
        if variant is not None or rung is not None:
            raise UserError("--finetune names the model on its own; leave out --rung and "
                            "--variant")
        _export_finetune(folder, finetune, merge, onnx, weights)
        return
    if onnx is None:
        raise UserError("export needs --onnx FILE (or --finetune NAME)")
    if merge or weights is not None:
        raise UserError("--merge and --weights apply to fine-tuned models (--finetune NAME)")
    from scalelab.compress import load_rung_model, load_variant
    from scalelab.compress.plan import choose_rung
    from scalelab.export import (
        EXPORT_BATCH,
        ONNX_TOLERANCE,
        OrtModule,
        check_writable,
        export_onnx,
        max_abs_logit_diff,
    )
    from scalelab.storage import StudyStore

    with StudyStore.open_readonly(folder) as store:
        _study, spec = _study_spec(store)
        rungs = store.rungs()
        row = choose_rung(rungs, rung or "largest")
        v = None
        if variant is not None:
            v = next((x for x in store.variants() if x["name"] == variant), None)
            if v is None:
                known = ", ".join(x["name"] for x in store.variants()) or "none"
                raise UserError(f"variant {variant!r} does not exist (variants: {known})")
            if v["of_rung"] != row["rung"]:
                raise UserError(f"variant {variant} is a variant of rung {v['of_rung']}, "
                                f"not of rung {row['rung']}")
    check_writable(onnx)
    res = _resolve(spec, folder)
    task, family = res.task, res.family
    reference = rung_model = load_rung_model(folder, row, family)
    what = f"rung {row['rung']}"
    if v is not None:
        reference = load_variant(folder, v, rungs, family)
        if isinstance(reference, OrtModule):  # the variant is an ONNX model already (int8)
            shutil.copyfile(reference.path, onnx)
            diff = max_abs_logit_diff(rung_model, OrtModule(onnx), task)
            note = get_method(v["method"]).restored_note or "the variant's own error"
            console.print(f"wrote {onnx} (variant {v['name']}, {v['method']}, copied)")
            console.print(f"max abs logit difference vs the fp32 rung: {diff:.3g} ({note}, "
                          "not an export error)")
            return
        note = get_method(v["method"]).restored_note
        what = f"variant {v['name']}" + (f" ({note})" if note else "")
    exporter = export_onnx(reference, onnx, task.example_input(EXPORT_BATCH))
    diff = max_abs_logit_diff(reference, OrtModule(onnx), task)
    ok = diff < ONNX_TOLERANCE
    console.print(f"wrote {onnx} ({what}, {exporter} exporter, {onnx.stat().st_size:,} bytes)")
    console.print(f"max abs logit difference, ONNX Runtime vs PyTorch (fp32): {diff:.3g} "
                  f"({'ok' if ok else 'FAILED'}, limit {ONNX_TOLERANCE:g})")
    if not ok:
        raise typer.Exit(1)


def _export_finetune(folder: Path, name: str, merge: bool, onnx: Path | None,
                     weights: Path | None) -> None:
    """`export --finetune NAME`: merge (LoRA/IA3), check the merge, write weights and/or ONNX."""
    from scalelab.export import (
        EXPORT_BATCH,
        MERGE_TOLERANCE,
        ONNX_TOLERANCE,
        OrtModule,
        check_writable,
        export_onnx,
        max_abs_logit_diff,
    )
    from scalelab.finetune.load import find, load_finetune
    from scalelab.finetune.second_task import SecondTask, build_task
    from scalelab.models.base import get_family
    from scalelab.storage import StudyStore
    from scalelab.train.checkpoint import save_weights

    with StudyStore.open_readonly(folder) as store:
        study, spec = _study_spec(store)
        ft = find(store.finetunes(), name)
        rungs = store.rungs()
    peft = ft["method"] != "full"
    if peft and not merge:
        raise UserError(f"{name} is a {ft['method']} adapter: export it merged into its base "
                        "weights with --merge")
    if onnx is None and weights is None:
        raise UserError("give --weights FILE and/or --onnx FILE")
    for out in (onnx, weights):
        if out is not None:
            check_writable(out)
    try:
        import peft as _peft  # noqa: F401
    except ImportError:
        raise UserError("fine-tuned models need the optional package peft: "
                        "pip install 'scalelab[finetune]'") from None
    family = get_family(spec.family.name, **spec.family.options)
    task_spec = ft.get("task_spec") or {}
    second = SecondTask(dict(task_spec.get("spec") or {}), str(ft["task"]), str(ft["task"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # binary files skipped: said at finetune
        task = build_task(second, family, study, Path(folder))
    trained, shipped = load_finetune(folder, ft, rungs, family)
    failed = False
    if peft:
        from scalelab.finetune.adapters import merge_diff

        x, _ = task.eval_data(16 * max(1, task.units_per_batch(1)), "val")
        diff = merge_diff(trained, shipped, x[:16])
        ok = diff["float64"] <= MERGE_TOLERANCE
        failed |= not ok
        console.print(f"merged {ft['method']} into rung {ft['of_rung']}'s weights; max abs logit "
                      f"difference, merged vs adapter model: {diff['float64']:.3g} in float64 "
                      f"({'ok' if ok else 'FAILED'}, limit {MERGE_TOLERANCE:g}); "
                      f"{diff['float32']:.3g} in float32 (rounding of the forward passes "
                      "included)")
    elif merge:
        console.print(f"{name} is a full fine-tune: nothing to merge")
    if weights is not None:
        nbytes = save_weights(shipped, weights)
        console.print(f"wrote {weights} ({nbytes:,} bytes; loads into the family's model of "
                      f"rung {ft['of_rung']}'s shape"
                      + (", with the new head's output size" if (ft.get("settings") or {})
                         .get("new_head") else "") + ")")
    if onnx is not None:
        exporter = export_onnx(shipped, onnx, task.example_input(EXPORT_BATCH))
        diff = max_abs_logit_diff(shipped, OrtModule(onnx), task)
        ok = diff < ONNX_TOLERANCE
        failed |= not ok
        console.print(f"wrote {onnx} ({name}, {exporter} exporter, {onnx.stat().st_size:,} bytes)")
        console.print(f"max abs logit difference, ONNX Runtime vs PyTorch (fp32): {diff:.3g} "
                      f"({'ok' if ok else 'FAILED'}, limit {ONNX_TOLERANCE:g})")
    if failed:
        raise typer.Exit(1)
