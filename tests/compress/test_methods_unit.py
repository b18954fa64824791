"""Compression methods on small random GPTs: exactness of the surgery, formats, parsing, the
registry's support table."""

from __future__ import annotations

import pytest
import torch

from scalelab.compress import lowrank, sparse
from scalelab.compress.base import REGISTRY, applicable, check_supported, get_method
from scalelab.compress.layers import untied_linears
from scalelab.compress.methods import Method, parse_methods, parse_rung
from scalelab.compress.prune import gpt_importance, prune_gpt, prune_structured
from scalelab.errors import UserError
from scalelab.models import count_params, gpt
from scalelab.models.base import get_family
from scalelab.train.measure import medians, speedups


def _family(share=False) -> gpt.GPTFamily:
    return get_family("gpt", block_size=16, share_layers=share)


def _shape(n_layer=2, d_model=64, share=False) -> dict:
    return gpt.GPTConfig(n_layer, d_model, d_model // gpt.HEAD_DIM, block_size=16,
                         share_layers=share).to_dict()


def _model(n_layer=2, d_model=64, share=False, seed=0) -> gpt.GPT:
    torch.manual_seed(seed)
    return _family(share).build(_shape(n_layer, d_model, share)).eval()


def _x(b=3, t=16, seed=1):
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


class _FakeTask:
    """Random calibration windows (structured pruning only needs `batch`)."""

    def batch(self, batch_size, generator):
        x = torch.randint(0, 256, (batch_size, 17), generator=generator)
        return x[:, :-1], x[:, 1:]


# -- parsing -----------------------------------------------------------------------------------


def test_methods_parse_to_canonical_names():
    ms = parse_methods("int8, fp16,PRUNE:0.50+ft,sparse:0.9,lowrank:0.25,distill,distill:0")
    assert [m.text for m in ms] == ["int8", "fp16", "prune:0.5+ft", "sparse:0.9",
                                    "lowrank:0.25", "distill", "distill:0"]
    assert Method("prune", 0.5, True).variant_name(3) == "r3-prune0.5-ft"
    assert Method("distill").variant_name(3, student=1) == "r3-distill-r1"
    assert parse_methods(["int8", "int8"]) == [Method("int8")]


@pytest.mark.parametrize("bad, words", [
    ("quantum", "unknown compression method"), ("prune:1.5", "between 0 and 1"),
    ("prune:0", "between 0 and 1"), ("sparse:1", "between 0 and 1"), ("lowrank", "needs"),
    ("prune:abc", "not a number"), ("int8:3", "takes no value"), ("sparse:0.5+ft", "+ft"),
    ("distill:x", "rung index"), ("", "no compression methods"),
])
def test_bad_methods_are_user_errors(bad, words):
    with pytest.raises(UserError, match=words.replace("+", r"\+")):
        parse_methods(bad)


def test_rung_argument():
    assert parse_rung("largest") == "largest" and parse_rung("3") == 3 and parse_rung(2) == 2
    for bad in ("-1", "big", -2):
        with pytest.raises(UserError):
            parse_rung(bad)


def test_the_registry_and_parsing_modules_import_no_torch():
    import subprocess
    import sys

    # A method's own module (torch) is imported when its kind is first looked up, not before.
    code = ("import sys, scalelab.compress.methods, scalelab.compress.plan; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_spec_compress_section_is_validated_when_the_study_resolves():
    from scalelab.spec import parse_spec
    from scalelab.study import resolve

    spec = parse_spec({"compress": {"rung": 1, "methods": ["int8", "prune:0.5"]}})
    assert spec.compress.rung == 1 and spec.compress.methods == ["int8", "prune:0.5"]
    with pytest.raises(UserError, match="between 0 and 1"):
        resolve(parse_spec({"compress": {"methods": ["prune:2"]}}))
    with pytest.raises(UserError, match="rung must be"):
        resolve(parse_spec({"compress": {"rung": "biggest"}}))


# -- the registry ------------------------------------------------------------------------------


def test_every_registered_kind_has_its_object():
    for kind in REGISTRY:
        method = get_method(kind)
        assert method.kind == kind
        value = None if kind in ("int8", "fp16", "bf16", "distill") else 0.5
        assert method.describe(Method(kind, value))


@pytest.mark.parametrize("family, objective, kind, ok", [
    ("gpt", "lm", "prune", True), ("mlp", "classification", "prune", True),
    ("cnn", "classification", "prune", False), ("custom", "regression", "prune", False),
    ("cnn", "classification", "int8", True), ("custom", "lm", "fp16", True),
    ("mlp", "regression", "sparse", True), ("cnn", "classification", "lowrank", True),
    ("mlp", "classification", "distill", True), ("gpt", "lm", "distill", True),
    ("mlp", "regression", "distill", False),
])
def test_support_table(family, objective, kind, ok):
    assert bool(get_method(kind).supports(family, objective)) is ok


def test_a_method_that_does_not_apply_is_one_clear_line():
    with pytest.raises(UserError) as err:
        check_supported(parse_methods("int8,prune:0.5"), "cnn", "classification")
    assert str(err.value) == ("prune:0.5: prune does not apply to family 'cnn' "
                              "(it supports gpt, mlp)")
    with pytest.raises(UserError, match="objective 'regression'.*lm, classification"):
        check_supported(parse_methods("distill"), "mlp", "regression")
    kept = applicable(parse_methods("int8,prune:0.5,distill"), "cnn", "regression")
    assert [m.text for m in kept] == ["int8"]


def test_latency_helper_flattens_once():
    lat = {"1": {"median": 2.0, "iqr": 0.1}, "32": {"median": 10.0, "iqr": 1.0}}
    assert medians(lat) == {"1": 2.0, "32": 10.0}
    assert medians({"1": 2.0}) == {"1": 2.0}
    assert speedups(lat, {"1": {"median": 1.0}, "8": {"median": 1.0}}) == {"1": 2.0}


# -- structured pruning ------------------------------------------------------------------------


@pytest.mark.parametrize("share", [False, True])
def test_pruning_dead_heads_and_channels_keeps_the_function(share):
    """Heads and channels whose output weights are zero contribute nothing; importance ranks
    them last, so removing exactly them must leave the logits unchanged."""
    model = _model(share=share)
    hd = gpt.HEAD_DIM
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight[:, 0:hd] = 0  # head 0
            block.attn.proj.weight[:, 2 * hd:3 * hd] = 0  # head 2
            block.mlp.proj.weight[:, ::2] = 0  # every other MLP channel
    family = _family(share)
    scores = gpt_importance(model, _FakeTask(), torch.device("cpu"))
    pruned, shape, changes = prune_gpt(family, model, _shape(share=share), 0.5, scores)
    # A plain GPT of a smaller config: no special attention module.
    assert type(pruned) is gpt.GPT and type(pruned.blocks[0].attn) is gpt.CausalSelfAttention
    assert shape == {**_shape(share=share), "n_head": 2, "d_ff": 128, "head_dim": 16}
    assert len(pruned.blocks) == (1 if share else 2)
    assert changes[0] == {"part": "attention heads per layer", "before": 4, "after": 2}
    x = _x()
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)
    n0, ne0 = family.count_params(model)
    n1, ne1 = family.count_params(pruned)
    assert ne1 < 0.55 * ne0 and n1 < n0
    # The shape alone rebuilds the model the weights load into.
    rebuilt = family.build(shape)
    rebuilt.load_state_dict(pruned.state_dict())
    torch.testing.assert_close(rebuilt(x), pruned(x))


def test_pruning_nothing_reproduces_the_model():
    model = _model()
    same, shape, _ = prune_structured(_family(), model, _shape(), 0.0, _FakeTask(),
                                      torch.device("cpu"))
    assert shape["n_head"] == 4 and shape["d_ff"] == 256
    torch.testing.assert_close(same(_x()), model(_x()))


# -- unstructured ------------------------------------------------------------------------------


def test_sparsify_hits_the_sparsity_and_the_bitmask_file_round_trips(tmp_path):
    model = _model()
    sparse_model, facts = sparse.sparsify(model, 0.75)
    assert facts["sparsity"] == pytest.approx(0.75, abs=1e-3)
    layers = untied_linears(sparse_model)
    assert [n for n, _ in layers][:2] == ["blocks.0.attn.qkv", "blocks.0.attn.proj"]
    assert all(n.startswith("blocks.") for n, _ in layers)  # the tied head is left dense
    for _, lin in layers:
        assert (lin.weight == 0).float().mean().item() == pytest.approx(0.75, abs=2e-3)
    assert torch.equal(sparse_model.wte.weight, model.wte.weight)  # embedding left dense
    path = tmp_path / "s.safetensors"
    nbytes = sparse.save_sparse(sparse_model, path)
    dense_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert nbytes < 0.6 * dense_bytes
    loaded = sparse.load_sparse(_model(seed=9), path)
    x = _x()
    torch.testing.assert_close(loaded(x), sparse_model(x))


# -- low rank ----------------------------------------------------------------------------------


def test_lowrank_is_exact_on_low_rank_weights_and_saves_parameters():
    model = _model()
    frac = 0.25
    with torch.no_grad():  # make every factorable weight exactly of the rank it will get
        for _, lin in untied_linears(model):
            k = lowrank.rank_for(lin.out_features, lin.in_features, frac)
            if k is not None:
                u, s, vh = torch.linalg.svd(lin.weight, full_matrices=False)
                lin.weight.copy_((u[:, :k] * s[:k]) @ vh[:k])
    small, ranks = lowrank.factorize(model, frac)
    assert ranks and all(k == 16 for k in ranks.values())
    assert all(name.startswith("blocks.") for name in ranks)  # never the tied head
    x = _x()
    torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)
    assert count_params(small)[1] < count_params(model)[1]
    rebuilt = lowrank.restructure(_model(seed=3), ranks)
    rebuilt.load_state_dict(small.state_dict())
    torch.testing.assert_close(rebuilt(x), small(x))


def test_lowrank_skips_layers_it_would_not_shrink():
    assert lowrank.rank_for(64, 64, 0.5) is None  # 32 * 128 = 64 * 64: no saving
    assert lowrank.rank_for(256, 64, 0.5) == 32
