"""Compression of the MLP family: the methods on models built from the family (unit tests), then
int8, structured pruning and low rank through `scalelab compress` on a tiny `digits` study, and
methods that do not apply (prune on a CNN, distill on a regression task) refused up front."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from scalelab.compress import load_rung_model, load_variant
from scalelab.compress.layers import untied_linears
from scalelab.compress.lowrank import factorize
from scalelab.compress.prune import keep_count, prune_structured
from scalelab.compress.quantize import int8_dynamic
from scalelab.compress.sparse import sparsify
from scalelab.models.base import get_family
from scalelab.models.mlp import MLP, n_params_for
from scalelab.spec import parse_spec
from scalelab.storage import StudyStore
from scalelab.study import resolve
from tests.compress.spec_helpers import small_task_spec, study_fingerprint
from tests.helpers import scalelab, scalelab_each, write_spec

SHAPE = {"in_features": 64, "input_shape": [64], "hidden": [32, 24], "n_outputs": 10,
         "activation": "gelu", "dropout": 0.0}


class _VectorTask:
    """Random float vectors: what structured pruning calibrates on and int8 traces on."""

    def batch(self, batch_size, generator):
        return torch.randn(batch_size, 64, generator=generator), torch.zeros(batch_size).long()

    def example_input(self, batch_size):
        return torch.randn(batch_size, 64, generator=torch.Generator().manual_seed(0))


def _mlp(seed=0) -> tuple[object, MLP]:
    family = get_family("mlp")
    torch.manual_seed(seed)
    return family, family.build(SHAPE).eval()


def _x(b=5):
    return torch.randn(b, 64, generator=torch.Generator().manual_seed(3))


# -- unit: models built from the family --------------------------------------------------------


def test_pruning_removes_hidden_units_and_keeps_the_function_of_the_rest():
    family, model = _mlp()
    with torch.no_grad():  # odd units of both hidden layers write nothing downstream
        model.layers[1].weight[:, 1::2] = 0
        model.head.weight[:, 1::2] = 0
    pruned, shape, changes = prune_structured(family, model, SHAPE, 0.5, _VectorTask(),
                                              torch.device("cpu"))
    assert shape["hidden"] == [16, 12] and isinstance(pruned, MLP)
    assert [lin.out_features for lin in pruned.layers] == [16, 12]
    assert family.count_params(pruned) == (n_params_for(64, [16, 12], 10),) * 2
    assert changes == [{"part": "hidden units", "before": [32, 24], "after": [16, 12]}]
    torch.testing.assert_close(pruned(_x()), model(_x()), atol=1e-5, rtol=1e-5)
    # The shape alone rebuilds the pruned model.
    rebuilt = family.build(shape)
    rebuilt.load_state_dict(pruned.state_dict())
    torch.testing.assert_close(rebuilt(_x()), pruned(_x()))


def test_keeping_every_unit_reproduces_the_outputs():
    family, model = _mlp(seed=1)
    same, shape, _ = prune_structured(family, model, SHAPE, 0.0, _VectorTask(),
                                      torch.device("cpu"))
    assert shape["hidden"] == SHAPE["hidden"]
    torch.testing.assert_close(same(_x()), model(_x()))


def test_lowrank_and_sparse_cover_every_linear_of_an_mlp():
    _, model = _mlp()
    assert [n for n, _ in untied_linears(model)] == ["layers.0", "layers.1", "head"]
    small, ranks = factorize(model, 0.25)
    assert set(ranks) == {"layers.0", "layers.1", "head"}
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    sparse, facts = sparsify(model, 0.5)
    assert facts["pruned_layers"] == 3 and facts["sparsity"] == pytest.approx(0.5, abs=1e-2)
    assert (sparse.head.weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-2)


def test_int8_exports_float_inputs_from_the_task(tmp_path):
    _, model = _mlp()
    q, fp32, nbytes, extra = int8_dynamic(model, _VectorTask().example_input(2),
                                          tmp_path / "q.onnx")
    assert q.input_name == "idx" and q.input_dtype.__name__ == "float32"
    torch.testing.assert_close(fp32(_x(7)), model(_x(7)), atol=1e-5, rtol=1e-4)
    assert (q(_x(7)) - model(_x(7))).abs().max().item() < 0.1
    assert extra["linear_weights"] == 3 and extra["linear_weight_ratio"] >= 3.5
    assert nbytes < 0.6 * extra["fp32_onnx_bytes"]  # graph overhead is fixed: ~1.9x here


# -- the CLI on a tiny digits study ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlp-study")
    spec = small_task_spec("digits-mlp", {"name": "digits", "flatten": True},
                           {"name": "mlp", "depth": 2}, [2500, 10000])
    folder = root / "study"
    scalelab("run", write_spec(root / "spec.yaml", spec), "--out", folder, check=True)
    scalelab("compress", folder, "--methods", "int8,prune:0.5,lowrank:0.5,distill", check=True)
    return folder


@pytest.fixture(scope="module")
def digits_summary(digits_study) -> dict:
    return json.loads((digits_study / "summary.json").read_text())


def test_mlp_variants_are_measured_with_the_tasks_metrics(digits_summary):
    variants = {v["name"]: v for v in digits_summary["variants"]}
    assert set(variants) == {"r1-int8", "r1-prune0.5", "r1-lowrank0.5", "r1-distill-r0"}
    for v in variants.values():
        assert v["val_loss"] is not None and set(v["latency_ms"]) == {"1", "32"}
        assert set(v["extra"]["metrics"]) == {"accuracy", "error"}
        assert set(v["extra"]["base_metrics"]) == {"accuracy", "error"}
    int8 = variants["r1-int8"]["extra"]
    assert int8["linear_weights"] == 3 and int8["linear_weight_ratio"] >= 3.5
    assert abs(int8["loss_delta"]) < 0.05
    assert variants["r1-distill-r0"]["extra"]["stream_verified"] is True


def test_mlp_structured_pruning_removes_the_exact_units(digits_study, digits_summary):
    rung = digits_summary["rungs"][1]
    v = next(x for x in digits_summary["variants"] if x["name"] == "r1-prune0.5")
    kept = [keep_count(w, 0.5) for w in rung["shape"]["hidden"]]
    assert all(k < w for k, w in zip(kept, rung["shape"]["hidden"], strict=True))
    assert v["settings"]["shape"] == {**rung["shape"], "hidden": kept}
    assert v["n_params"] == v["n_nonembed"] == n_params_for(64, kept, 10)
    with StudyStore.open_readonly(digits_study) as store:
        spec = parse_spec(store.study()["spec"])
        rungs = store.rungs()
        stored = {x["name"]: x for x in store.variants()}
    res = resolve(spec, out=digits_study)
    model = load_variant(digits_study, stored["r1-prune0.5"], rungs, res.family)
    assert [lin.out_features for lin in model.layers] == kept
    ev = res.task.evaluate(model, torch.device("cpu"), spec.train.final_eval_tokens)
    assert ev["loss"] == pytest.approx(v["val_loss"], abs=1e-5)
    assert ev["error"] == pytest.approx(v["extra"]["metrics"]["error"])
    base = load_rung_model(digits_study, rungs[1], res.family)
    assert base.layers[0].out_features == rung["shape"]["hidden"][0]


def test_mlp_lowrank_factors_the_linears(digits_summary):
    rung = digits_summary["rungs"][1]
    v = next(x for x in digits_summary["variants"] if x["name"] == "r1-lowrank0.5")
    assert set(v["settings"]["ranks"]) <= {"layers.0", "layers.1", "head"}
    assert v["settings"]["ranks"] and v["n_params"] < rung["n_params"]


MLP_EXPORTS = [None, "r1-prune0.5", "r1-lowrank0.5"]


@pytest.fixture(scope="module")
def mlp_exports(digits_study, tmp_path_factory) -> list[tuple]:
    """Rung 1 and each variant in MLP_EXPORTS exported (`scalelab_each`: one process each):
    (process, the file written) in that order."""
    root = tmp_path_factory.mktemp("mlp-exports")
    files = [root / f"{v or 'rung'}.onnx" for v in MLP_EXPORTS]
    procs = scalelab_each(*[["export", digits_study, "--rung", "1", "--onnx", out,
                             *(["--variant", v] if v else [])]
                            for v, out in zip(MLP_EXPORTS, files, strict=True)])
    return list(zip(procs, files, strict=True))


@pytest.mark.parametrize("variant", MLP_EXPORTS)
def test_mlp_export_round_trips(mlp_exports, variant):
    proc, out = mlp_exports[MLP_EXPORTS.index(variant)]
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and out.stat().st_size > 0


def test_report_names_no_gpt_parts_for_an_mlp(digits_study):
    html = (digits_study / "report.html").read_text()
    section = html[html.index("<h2>Compression</h2>"):]
    assert "hidden units" in section and "heads per layer" not in section
    assert "nats/example" in section and "val error" in section


# -- methods that do not apply -----------------------------------------------------------------


def _regression_csv(path: Path) -> Path:
    rng = random.Random(0)
    lines = ["a,b,c,y"]
    for _ in range(300):
        a, b, c = (rng.uniform(-1, 1) for _ in range(3))
        lines.append(f"{a:.4f},{b:.4f},{c:.4f},{2 * a - b + 0.5 * c + rng.gauss(0, 0.1):.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _refused_case(kind: str, folder: Path) -> tuple[dict, str, str]:
    """The spec of `kind`'s study, the methods asked for, and the words of the refusal."""
    if kind == "cnn-prune":
        spec = small_task_spec("cnn", {"name": "digits"}, {"name": "cnn", "depth": 2},
                               [1000], examples=640)
        return spec, "int8,prune:0.5", ("prune:0.5: prune does not apply to family 'cnn' "
                                        "(it supports gpt, mlp)")
    csv = _regression_csv(folder / "reg.csv")
    spec = small_task_spec("reg", {"name": "tabular", "path": str(csv), "target": "y"},
                           {"name": "mlp"}, [200], examples=640)
    return spec, "distill:0", "objective 'regression'"


REFUSED = ["cnn-prune", "regression-distill"]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict[str, tuple]:
    """A one-rung study of each kind trained, then `compress` asked for a method that does not
    apply to it (`scalelab_each`: one process each): {kind: (process, words, the study's
    fingerprint before, after)}."""
    folders = [tmp_path_factory.mktemp(kind) for kind in REFUSED]
    cases = [_refused_case(kind, f) for kind, f in zip(REFUSED, folders, strict=True)]
    runs = scalelab_each(*[["run", write_spec(f / "spec.yaml", spec), "--out", f / "study"]
                           for f, (spec, _, _) in zip(folders, cases, strict=True)])
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    before = [study_fingerprint(f / "study") for f in folders]
    procs = scalelab_each(*[["compress", f / "study", "--rung", "0", "--methods", methods]
                            for f, (_, methods, _) in zip(folders, cases, strict=True)])
    return {kind: (proc, words, fp, study_fingerprint(f / "study"))
            for kind, proc, (_, _, words), fp, f
            in zip(REFUSED, procs, cases, before, folders, strict=True)}


@pytest.mark.parametrize("kind", REFUSED)
def test_a_method_that_does_not_apply_is_refused_and_changes_nothing(refused, kind):
    proc, words, before, after = refused[kind]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert after == before
