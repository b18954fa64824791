"""Compression methods on small random models: exactness of the surgery, formats, parsing."""

from __future__ import annotations

import pytest
import torch

from scalelab.compress import lowrank, prune
from scalelab.compress.methods import Method, parse_methods, parse_rung
from scalelab.errors import UserError
from scalelab.models import gpt
from scalelab.spec import parse_spec


def _model(n_layer=2, d_model=64, share=False, seed=0) -> gpt.GPT:
    torch.manual_seed(seed)
    return gpt.build(gpt.GPTConfig(n_layer, d_model, d_model // gpt.HEAD_DIM, block_size=16,
                                   share_layers=share)).eval()


def _x(b=3, t=16, seed=1):
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


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


def test_spec_compress_section_is_validated_up_front():
    spec = parse_spec({"compress": {"rung": 1, "methods": ["int8", "prune:0.5"]}})
    assert spec.compress.rung == 1 and spec.compress.methods == ["int8", "prune:0.5"]
    assert "sparse:0.5" in parse_spec({"compress": {}}).compress.methods
    with pytest.raises(UserError, match="compress.methods"):
        parse_spec({"compress": {"methods": ["prune:2"]}})
    with pytest.raises(UserError, match="compress.rung"):
        parse_spec({"compress": {"rung": "biggest"}})


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
    task = _FakeTask()
    scores = prune.importance(model, task, 16, torch.device("cpu"))
    pruned, structure = prune.prune_structured(model, 0.5, scores)
    n_blocks = 1 if share else 2
    assert structure == {"heads": [2] * n_blocks, "ffn": [128] * n_blocks}
    x = _x()
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)
    n0, ne0 = gpt.count_params(model)
    n1, ne1 = gpt.count_params(pruned)
    assert ne1 < 0.55 * ne0 and n1 < n0
    # The structure alone rebuilds the module tree the weights load into.
    rebuilt = prune.restructure(_model(share=share, seed=5), structure)
    rebuilt.load_state_dict(pruned.state_dict())
    torch.testing.assert_close(rebuilt(x), pruned(x))


class _FakeTask:
    """Random calibration windows (structured pruning only needs `batch`)."""

    def batch(self, batch_size, block_size, generator):
        x = torch.randint(0, 256, (batch_size, block_size + 1), generator=generator)
        return x[:, :-1], x[:, 1:]


# -- unstructured ------------------------------------------------------------------------------


def test_sparsify_hits_the_sparsity_and_the_bitmask_file_round_trips(tmp_path):
    model = _model()
    sparse, facts = prune.sparsify(model, 0.75)
    assert facts["sparsity"] == pytest.approx(0.75, abs=1e-3)
    for _, lin in prune._block_linears(sparse):
        assert (lin.weight == 0).float().mean().item() == pytest.approx(0.75, abs=2e-3)
    assert torch.equal(sparse.wte.weight, model.wte.weight)  # embedding left dense
    path = tmp_path / "s.safetensors"
    nbytes = prune.save_sparse(sparse, path)
    dense_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert nbytes < 0.6 * dense_bytes
    loaded = prune.load_sparse(_model(seed=9), path)
    x = _x()
    torch.testing.assert_close(loaded(x), sparse(x))


# -- low rank ----------------------------------------------------------------------------------


def test_lowrank_is_exact_on_low_rank_weights_and_saves_parameters():
    model = _model()
    frac = 0.25
    with torch.no_grad():  # make every factorable weight exactly of the rank it will get
        for lin in (m for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)):
            k = lowrank.rank_for(lin.out_features, lin.in_features, frac)
            if k is not None:
                u, s, vh = torch.linalg.svd(lin.weight, full_matrices=False)
                lin.weight.copy_((u[:, :k] * s[:k]) @ vh[:k])
    small, ranks = lowrank.factorize(model, frac)
    assert ranks and all(k == 16 for k in ranks.values())
    x = _x()
    torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)
    assert gpt.count_params(small)[1] < gpt.count_params(model)[1]
    rebuilt = lowrank.restructure(_model(seed=3), ranks)
    rebuilt.load_state_dict(small.state_dict())
    torch.testing.assert_close(rebuilt(x), small(x))


def test_lowrank_skips_layers_it_would_not_shrink():
    assert lowrank.rank_for(64, 64, 0.5) is None  # 32 * 128 = 64 * 64: no saving
    assert lowrank.rank_for(256, 64, 0.5) == 32
