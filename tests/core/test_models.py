import math

import pytest
import torch

from scalelab.models import count_params, gpt


@pytest.mark.parametrize("n_layer,d_model,share", [(1, 16, False), (3, 48, False), (4, 32, True)])
def test_exact_counts_match_the_built_model(n_layer, d_model, share):
    cfg = gpt.GPTConfig(n_layer, d_model, d_model // 16, block_size=32, share_layers=share)
    model = gpt.build(cfg)
    n_params, n_nonembed = count_params(model)
    assert n_nonembed == gpt.nonembed_for(n_layer, d_model, share)
    embed = cfg.vocab_size * d_model + cfg.block_size * d_model
    assert n_params == n_nonembed + embed


def test_head_is_tied_to_the_token_embedding():
    model = gpt.build(gpt.GPTConfig(2, 32, 2))
    assert model.head.weight.data_ptr() == model.wte.weight.data_ptr()


def test_shared_layers_store_one_block_but_compute_all_layers():
    shared = gpt.build(gpt.GPTConfig(4, 32, 2, share_layers=True))
    plain = gpt.build(gpt.GPTConfig(4, 32, 2))
    assert len(shared.blocks) == 1 and len(shared.layers()) == 4
    assert count_params(shared)[1] < count_params(plain)[1] / 3


def test_forward_is_causal():
    torch.manual_seed(0)
    model = gpt.build(gpt.GPTConfig(2, 32, 2, block_size=16)).eval()
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (1, 16, 256)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


@pytest.mark.parametrize("target", [3.3e3, 1e4, 3e4, 1e5, 4e5, 1e6, 3e6])
def test_shape_for_comes_close_to_the_target(target):
    cfg = gpt.shape_for(target)
    assert abs(math.log(gpt.nonembed_for(cfg.n_layer, cfg.d_model) / target)) <= 0.25
    assert cfg.d_model % gpt.HEAD_DIM == 0 and cfg.n_head * gpt.HEAD_DIM == cfg.d_model


def test_shape_for_grows_depth_and_width_with_size():
    shapes = [gpt.shape_for(t) for t in (1e4, 1e5, 1e6, 1e7)]
    assert [s.n_layer for s in shapes] == sorted(s.n_layer for s in shapes)
    assert [s.d_model for s in shapes] == sorted(s.d_model for s in shapes)
    assert shapes[-1].n_layer > shapes[0].n_layer


def test_shape_for_rejects_nonpositive():
    with pytest.raises(ValueError):
        gpt.shape_for(0)
