"""Family `hf`: the sizing rule, the parameter count against a hand count, and its options
(a bad one is one UserError line). Models are built from configs only: nothing is downloaded."""

from __future__ import annotations

import sys

import pytest
import torch

from scalelab.errors import UserError
from scalelab.models.base import get_family
from scalelab.models.hf import KNOWN_GOOD
from scalelab.tasks.base import TaskIO

pytest.importorskip("transformers")

BYTES = TaskIO("sequence", (32,), 256, 256)


def llama_2x64_by_hand(vocab: int = 256) -> tuple[int, int]:
    """(n_params, n_nonembed) of the llama the rule picks for 1e5 (2 layers of width 64, one
    head of 64, MLP 176 = 64 · 11008/4096 rounded to 16), counted by hand."""
    d, ff, layers = 64, 176, 2
    attn = 4 * d * d  # q, k, v, o: no biases in llama
    mlp = 3 * d * ff  # gate, up, down
    norms = 2 * d  # two RMSNorms (one weight each)
    nonembed = layers * (attn + mlp + norms) + d  # + the final RMSNorm
    return nonembed + 2 * vocab * d, nonembed  # + input embedding + untied lm_head


def test_llama_count_matches_hand_count():
    family = get_family("hf", model_type="llama", block_size=32)
    shape = family.shape_for(1e5, BYTES)
    cfg = shape["config"]
    assert (cfg["num_hidden_layers"], cfg["hidden_size"]) == (2, 64)
    assert (cfg["num_attention_heads"], cfg["head_dim"], cfg["intermediate_size"]) == (1, 64, 176)
    assert family.count_params(family.build(shape)) == llama_2x64_by_hand()


def test_tied_head_is_counted_once_and_not_as_nonembed():
    family = get_family("hf", model_type="llama", block_size=32, tie_word_embeddings=True)
    model = family.build(family.shape_for(1e5, BYTES))
    n_params, nonembed = llama_2x64_by_hand()
    assert family.count_params(model) == (n_params - 256 * 64, nonembed)


def test_gpt2_count_leaves_out_position_embedding():
    """gpt2: biases, LayerNorms, learned positions (an embedding, left out), MLP 4x, tied."""
    family = get_family("hf", model_type="gpt2", block_size=32)
    shape = family.shape_for(1e5, BYTES)
    d, layers = 64, 2
    assert (shape["config"]["n_layer"], shape["config"]["n_embd"]) == (layers, d)
    per_layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) \
        + (4 * d * d + d)
    nonembed = layers * per_layer + 2 * d
    model = family.build(shape)
    assert family.count_params(model) == (nonembed + 256 * d + 32 * d, nonembed)


def test_rule_keeps_the_aspect_and_the_config_ratios():
    """Depth from d ≈ 32·L; head width 64 where d is a multiple of 64; mistral keeps its
    quarter of KV heads and its 3.5x MLP; from width 512 on every head is 64 wide."""
    family = get_family("hf", model_type="mistral", block_size=32)
    io = TaskIO("sequence", (32,), 1000, 1000)
    for target in (3e5, 1e6, 3e6):
        cfg = family.shape_for(target, io)["config"]
        d, n_layer = cfg["hidden_size"], cfg["num_hidden_layers"]
        n = family.count_params(family.build({"model_type": "mistral", "config": cfg}))[1]
        assert 0.5 < d / n_layer / 32 < 2.0, cfg
        assert cfg["head_dim"] * cfg["num_attention_heads"] == d
        assert cfg["head_dim"] == next(w for w in (64, 32, 16) if d % w == 0)
        assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
        # a quarter of the heads, or the largest divisor of the heads below a quarter
        assert cfg["num_key_value_heads"] <= max(1, round(cfg["num_attention_heads"] / 4))
        assert abs(cfg["intermediate_size"] - 3.5 * d) <= 8
        assert cfg["vocab_size"] == 1000 and cfg["max_position_embeddings"] == 32
        assert abs(n / target - 1) < 0.25, (target, n)
    big = family.shape_for(3e8, io)["config"]
    assert big["hidden_size"] >= 512 and big["head_dim"] == 64


def test_fixed_options_reach_the_model_and_the_shape():
    family = get_family("hf", model_type="llama", block_size=32, rms_norm_eps=1e-5,
                        hidden_act="gelu")
    shape = family.shape_for(3e4, BYTES)
    assert shape["config"]["rms_norm_eps"] == 1e-5
    model = family.build(shape)
    assert model.lm.config.rms_norm_eps == 1e-5 and model.lm.config.hidden_act == "gelu"


@pytest.mark.parametrize("model_type", KNOWN_GOOD)
def test_every_type_named_in_messages_builds_and_returns_logits(model_type):
    """The types a bad model_type's message names are sized, built and run (phi3's own pad id,
    32000, is outside a byte vocabulary: dropped)."""
    family = get_family("hf", model_type=model_type, block_size=32)
    model = family.build(family.shape_for(3e4, BYTES))
    out = model(torch.randint(0, 256, (2, 32)))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 32, 256)
    out.sum().backward()


def test_config_dir(tmp_path):
    """A local config folder: its settings are kept (and stored in the shape), sizes set."""
    from transformers import AutoConfig

    AutoConfig.for_model("llama", rms_norm_eps=3e-6, num_key_value_heads=8).save_pretrained(
        tmp_path)
    family = get_family("hf", config_dir=str(tmp_path), block_size=32)
    shape = family.shape_for(1e6, BYTES)
    assert shape["model_type"] == "llama" and shape["config"]["rms_norm_eps"] == 3e-6
    assert "transformers_version" not in shape["config"]
    cfg = family.build(shape).lm.config
    heads, quarter = cfg.num_attention_heads, max(1, round(cfg.num_attention_heads / 4))
    # the folder's share of KV heads (8 of 32), as the largest divisor of the heads up to it
    assert cfg.num_key_value_heads == max(k for k in range(1, quarter + 1) if heads % k == 0)


@pytest.mark.parametrize(("options", "message"), [
    ({"model_type": "lama"}, "model_type 'lama' is not a causal LM that transformers"),
    ({"model_type": "t5"}, "some that are: llama, qwen2"),
    ({}, "give model_type (llama, qwen2, ...) or config_dir"),
    ({"model_type": "llama", "config_dir": "x"}, "give model_type"),
    ({"model_type": "llama", "hidden_size": 64}, "'hidden_size' is set by the sizing rule"),
    ({"model_type": "gpt2", "n_embd": 64}, "'n_embd' is set by the sizing rule"),
    ({"model_type": "llama", "rms_norm_epsilon": 1e-5}, "unknown key 'rms_norm_epsilon'"),
    ({"config_dir": "/nonexistent/folder"}, "has no config.json"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(UserError) as err:
        get_family("hf", **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_without_transformers_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    with pytest.raises(UserError, match=r"needs the optional package transformers: "
                                        r"pip install 'scalelab\[hf\]'"):
        get_family("hf", model_type="llama")


def test_listed_without_importing_transformers():
    """`scalelab list families` names hf; the listing does not import transformers."""
    import subprocess

    code = ("import sys; from scalelab.catalog import catalog; "
            "hf = [e for e in catalog('families') if e.name == 'hf']; "
            "print(len(hf), 'rms_norm_eps' in hf[0].facts['other keys'], "
            "'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "True", "False"]


def test_spec_resolves_config_dir_from_its_own_folder(tmp_path):
    from scalelab.spec import load_spec

    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "s.yaml"
    spec.write_text("task: {name: text, path: ../corpus.txt}\n"
                    "family: {name: hf, config_dir: ../my-llama, block_size: 32}\n"
                    "ladder: {sizes: [1.0e4, 3.0e4]}\n")
    (tmp_path / "corpus.txt").write_text("x")
    family = load_spec(spec).family
    assert family.options["config_dir"] == str(tmp_path / "my-llama")
