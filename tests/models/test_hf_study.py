"""Family `hf` everywhere `gpt` goes, through the real CLI: a shrunken copy of
examples/hf-llama.yaml (4 llama sizes on the JSONL file examples/data/make_jsonl.py writes)
trains end to end with its law, holdout and report; the same with `model_type: qwen2`; then on
the llama study `finetune` with LoRA, `export` to ONNX, and the compressions that apply (int8,
sparse, low-rank), with `prune` refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import scalelab, scalelab_each, write_spec

pytest.importorskip("transformers")
pytest.importorskip("datasets")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hf-llama.yaml"


def shrunken(model_type: str, data: Path) -> dict:
    """The example's spec at a few seconds a rung: block 32, 4 small sizes (one layer allowed:
    two-layer models this small would share shapes), 24 steps each."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["name"] = f"hf-{model_type}-tiny"
    spec["task"]["path"] = str(data)
    spec["family"].update(model_type=model_type, block_size=32, min_layers=1)
    spec["ladder"] = {"sizes": [1.0e4, 2.0e4, 4.0e4, 8.0e4]}
    spec["train"].update(tokens=6144, batch_size=8, eval_every=12, checkpoint_every=12,
                         eval_tokens=2048, final_eval_tokens=4096)
    spec.update(measure={"latency_repeats": 3, "threads": 1}, fit={"bootstrap": 50},
                device="cpu")
    return spec


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The example's JSONL, written by its own script."""
    import importlib.util

    path = ROOT / "examples" / "data" / "make_jsonl.py"
    module_spec = importlib.util.spec_from_file_location("make_jsonl", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    out = module.write(tmp_path_factory.mktemp("hf-data") / "python_topics.jsonl")
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"topic", "text"} and first["text"]
    return out


def _study(model_type: str, data: Path, root: Path) -> Path:
    spec = write_spec(root / "spec.yaml", shrunken(model_type, data))
    scalelab("run", spec, "--out", root / "study", check=True)
    return root / "study"


@pytest.fixture(scope="module")
def llama(data, tmp_path_factory) -> Path:
    return _study("llama", data, tmp_path_factory.mktemp("hf-llama"))


def _check_ladder(study: Path, model_type: str) -> None:
    summary = json.loads((study / "summary.json").read_text())
    rungs = summary["rungs"]
    assert [r["status"] for r in rungs] == ["done"] * 4
    assert all(r["family"] == "hf" and r["shape"]["model_type"] == model_type for r in rungs)
    sizes = [r["n_nonembed"] for r in rungs]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    for r in rungs:
        assert r["flops"] > 0 and r["val_loss"] > 0 and r["steps"] == 24
        assert r["train_loss"] < 5.0  # from ln 256 = 5.55 at the start: it learned
    fit = next(f for f in summary["fits"] if f["y"] == "val_loss")
    assert fit["params"] and fit["holdout"] is not None
    assert (study / "report.html").stat().st_size > 0


def test_llama_ladder_end_to_end(llama):
    _check_ladder(llama, "llama")


def test_qwen2_ladder_end_to_end(data, tmp_path):
    _check_ladder(_study("qwen2", data, tmp_path), "qwen2")


@pytest.mark.slow
def test_finetune_lora_export_and_compress(llama, tmp_path):
    """On the llama study: a rerun resumes with nothing to train, the rung exports to ONNX
    (checked against PyTorch by the command), LoRA fine-tunes it, and int8, sparse and
    low-rank variants are made and measured; prune is refused in one line."""
    before = json.loads((llama / "summary.json").read_text())["rungs"]
    onnx = tmp_path / "rung.onnx"
    run, export, lora, compress, prune = scalelab_each(
        ["run", llama.parent / "spec.yaml", "--out", llama],
        ["export", llama, "--rung", "1", "--onnx", onnx],
        ["finetune", llama, "--methods", "lora:r=4", "--rungs", "0", "--tokens", "8192"],
        ["compress", llama, "--rung", "1", "--methods", "int8,sparse:0.5,lowrank:0.5"],
        ["compress", llama, "--rung", "1", "--methods", "prune:0.5"])
    for proc in (run, export, lora, compress):
        assert proc.returncode == 0, proc.stderr
    assert prune.returncode == 2
    assert prune.stderr.strip().splitlines() == [prune.stderr.strip()]
    assert "prune does not apply to family 'hf'" in prune.stderr
    summary = json.loads((llama / "summary.json").read_text())
    keep = ("rung", "val_loss", "steps", "n_nonembed")
    assert [{k: r[k] for k in keep} for r in summary["rungs"]] == \
        [{k: r[k] for k in keep} for r in before]  # resumed: nothing trained again
    assert onnx.stat().st_size > 0
    variants = {v["name"]: v for v in summary["variants"]}
    assert set(variants) == {"r1-int8", "r1-sparse0.5", "r1-lowrank0.5"}
    rung = summary["rungs"][1]
    for v in variants.values():
        assert v["val_loss"] > 0 and v["bytes"] > 0
        assert v["val_loss"] < rung["val_loss"] + 1.0  # a compressed model, not a broken one
    assert variants["r1-lowrank0.5"]["n_params"] < rung["n_params"]
    (ft,) = summary["finetunes"]
    assert ft["name"] == "r0-stdlib-test-lora-r4" and ft["status"] == "done"
    assert 0 < ft["trainable_params"] < ft["n_params"] == summary["rungs"][0]["n_params"]
    assert ft["val_loss"] < ft["zero_shot_loss"]


def test_bad_model_type_is_one_line_and_writes_nothing(data, tmp_path):
    spec = shrunken("llama", data)
    spec["family"]["model_type"] = "lama"
    out = tmp_path / "study"
    proc = scalelab("run", write_spec(tmp_path / "spec.yaml", spec), "--out", out)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "model_type 'lama' is not a causal LM" in proc.stderr and "llama" in proc.stderr
    assert not out.exists()
