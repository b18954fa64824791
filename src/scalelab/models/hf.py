"""Family `hf`: any causal language model that Hugging Face `transformers` builds from a config.

The spec names a `model_type` (llama, qwen2, mistral, gpt_neox, gpt2, ...: any type that
`AutoModelForCausalLM` builds) or a local `config_dir` (a folder holding a `config.json`); every
other key of the family is a fixed option of the model's config (`rms_norm_eps`,
`tie_word_embeddings`, `rope_parameters`, `hidden_act`, ...), checked against that config's keys.
Nothing is downloaded: the config is `AutoConfig.for_model(model_type, **options)` (or
`AutoConfig.from_pretrained(config_dir)` with the options over it) and the model
`AutoModelForCausalLM.from_config`, initialised by `transformers`' own rule from the rung's seed.
`transformers` is imported on first use, so `import scalelab` and the CLI stay fast and the
`hf` extra stays optional (`pip install 'scalelab[hf]'`).

The sizing rule, one for every model type. The rule sets the size keys of the config and keeps
everything else the config says:

- width d (`hidden_size`): a multiple of 16 below 512, of 64 from 512 on (`width_of`), so a
  step of width changes the count by at most ~13% from 512 on;
- heads: head width 64 where it fits (d a multiple of 64: every width from 512 on), else 32 or
  16, the widest that divides d; `num_attention_heads` = d / head width, and `head_dim` where
  the config has one;
- KV heads (`num_key_value_heads`, where the config has one): the config's own share of KV
  heads (all of them for llama, a quarter for mistral), rounded to a divisor of the heads;
- MLP width: the config's own ratio of MLP width to hidden size (11008 / 4096 for llama,
  22016 / 4096 for qwen2, 4 for gpt2 and gpt_neox), times d, rounded to a multiple of 16;
- depth L: the depth whose model at the fixed aspect ratio d = ASPECT · L (32, as `gpt`) has the
  non-embedding count closest (in log) to the target; then at that depth, the width whose count
  is closest to the target. So every rung keeps about the same d / L and the target is met by
  the width, one step at a time.

Counting, as the field does (Kaplan et al. 2020): `n_nonembed` = every parameter but the input
embedding, any position embedding and, when it is not tied to the input embedding, the output
head (`lm_head`). A tied head is the input embedding and is left out once. Counts during sizing
come from models built on the meta device (no memory, no init), cached per (depth, width).

The model. `HFCausalLM` wraps the `transformers` model; its forward takes token ids and returns
the logits, the one place where the model's `ModelOutput` is adapted, so training, evaluation,
FLOP counting, compression, fine-tuning (PEFT targets the wrapped model's own Linear layers:
`lm.model.layers.0.self_attn.q_proj`, ...) and ONNX export see a model like any other. The
vocabulary is the task's (256 bytes, or its tokenizer's size) and the context its `block_size`.
The shape (`{"model_type", "config"}`) holds the complete config arguments, so a stored rung is
rebuilt from its shape alone, even when `config_dir` has since changed.

Does not apply: structured pruning (`prune` names the families it knows; an HF model's heads and
MLP channels live in per-architecture modules) and packing (`train/pack.py` re-implements the
`gpt` forward for K stacked models; an `hf` rung trains on its own).

Measured against `gpt` (tests/models/test_hf_equivalence.py): a llama of gpt's shape (same
depth, width and heads, MLP 4x, tied head, no biases in llama) is a different function (RMSNorm
for LayerNorm, rotary for learned positions, SwiGLU for GELU, its own init): after 20 steps on
the same batches their training losses were 0.033 nats apart (3.6849 and 3.6522). That test
instead checks the `hf` rung against a plain PyTorch loop over the same `transformers` model
(same init, batches and optimizer): equal to the bit at every step.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from scalelab.errors import UserError
from scalelab.models.base import FamilyBase, closest_knob, count_params
from scalelab.tasks.base import TaskIO

ASPECT = 32  # the fixed aspect rule: d_model ≈ ASPECT * n_layer (as family `gpt`)
WIDTH_STEP = 16  # widths below WIDE and MLP widths are multiples of this
WIDE = 512  # from this width on, widths are multiples of 64: every head 64 wide
HEAD_WIDTHS = (64, 32, 16)  # the head width: the first of these that divides d
MAX_LAYERS = 48
INSTALL = "pip install 'scalelab[hf]'"
# Model types named in messages, each built, run and backpropagated by tests/models/test_hf.py.
KNOWN_GOOD = ("llama", "qwen2", "qwen3", "mistral", "gpt_neox", "gpt2", "olmo2", "phi3")
# The config keys the sizing rule sets, by their common names (a config's `attribute_map` gives
# its own: gpt2's n_embd, n_layer, n_head, n_positions).
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "head_dim", "intermediate_size", "n_inner", "vocab_size", "max_position_embeddings")
MLP_KEYS = ("intermediate_size", "n_inner")  # the MLP width, as the configs name it
GPT2_MLP_RATIO = 4  # gpt2-style configs leave `n_inner` None, meaning 4 * hidden size
# Config entries that say where or with what a config was written, not what the model is, and
# per-layer lists whose length is the depth (derived again by the config for each depth).
NOT_MODEL = ("transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures",
             "model_type", "layer_types")


def transformers_module() -> Any:
    """`transformers`, imported on first use; a one-line UserError when the extra is missing."""
    try:
        import transformers
    except ImportError:
        raise UserError(f"family 'hf' needs the optional package transformers: {INSTALL}") \
            from None
    transformers.logging.set_verbosity_error()  # its notes on unused defaults are not ours
    return transformers


def causal_types() -> list[str]:
    """Every model type the installed `transformers` builds as a causal LM from a config."""
    transformers_module()
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


class HFCausalLM(nn.Module):
    """A `transformers` causal LM on scalelab's model protocol: token ids in, logits out."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, time, vocab): the `ModelOutput` adapted here, once."""
        return self.lm(input_ids=idx, use_cache=False).logits


def config_for(model_type: str, config: dict) -> Any:
    """The `transformers` config of a shape's arguments."""
    return transformers_module().AutoConfig.for_model(model_type, **config)


def build_model(shape: dict) -> HFCausalLM:
    """A fresh model from a shape alone (initialised from torch's global RNG, as `gpt`)."""
    transformers = transformers_module()
    cfg = config_for(shape["model_type"], shape["config"])
    return HFCausalLM(transformers.AutoModelForCausalLM.from_config(cfg))


def hf_count_params(model: nn.Module) -> tuple[int, int]:
    """(n_params, n_nonembed) by the field's rule (module docstring): `count_params` leaves out
    every nn.Embedding; an untied output head (`lm_head`, or what compression made of it) is
    left out here too."""
    n_params, n_nonembed = count_params(model)
    head = _output_head(model)
    if head is not None:
        embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        n_nonembed -= sum(p.numel() for p in head.parameters() if id(p) not in embedded)
    return n_params, n_nonembed


def _output_head(model: nn.Module) -> nn.Module | None:
    """The output head of an `HFCausalLM` (also inside a PEFT wrapper), else None."""
    for module in model.modules():
        if isinstance(module, HFCausalLM) and hasattr(module.lm, "get_output_embeddings"):
            return module.lm.get_output_embeddings()
    return None


def _own_name(base: Any, key: str) -> str:
    """A common config key by the config's own name (`hidden_size` is gpt2's `n_embd`)."""
    return dict(getattr(base, "attribute_map", {}) or {}).get(key, key)


def _has(base: Any, key: str) -> bool:
    return _own_name(base, key) in base.to_dict()


class HFOptions(BaseModel):
    """`model_type` or `config_dir`, the context, the shallowest depth; any other key is a
    fixed option of the model's config (checked against its keys when the family is made)."""

    model_config = ConfigDict(extra="allow")
    model_type: str | None = Field(
        None, description="a causal LM type transformers builds from a config: llama, qwen2, "
                          "mistral, gpt_neox, gpt2, ...")
    config_dir: str | None = Field(
        None, description="or a local folder with a config.json (relative to the spec's folder)")
    block_size: int = Field(64, gt=1, description="context length in tokens")
    min_layers: int = Field(1, ge=1, le=MAX_LAYERS, description="the shallowest depth the size "
                                                                "rule may choose")

    @property
    def fixed(self) -> dict:
        """The config options the spec fixes (every key but the family's own)."""
        return dict(self.model_extra or {})


class HFFamily(FamilyBase):
    """Family `hf`; see the module docstring for the sizing rule and what is counted."""

    name = "hf"
    accepts = ("sequence",)
    Options = HFOptions
    other_keys = ("fixed options of the model's transformers config (rms_norm_eps, "
                  "tie_word_embeddings, hidden_act, ...), the same for every rung")

    def __init__(self, options: HFOptions | None = None):
        self.options = options or HFOptions(model_type="llama")
        self.context = self.options.block_size
        self.base = self._base_config()  # the config every rung's sizes are set on
        self.model_type = str(self.base.model_type)
        self._counts: dict[tuple[int, int, int], int] = {}

    # -- the config ------------------------------------------------------------------------------

    def _base_config(self) -> Any:
        """The config of the spec (model type or folder, fixed options), or one UserError line."""
        o = self.options
        if (o.model_type is None) == (o.config_dir is None):
            raise UserError("family (hf): give model_type (llama, qwen2, ...) or config_dir "
                            "(a folder with a config.json), one of them")
        transformers = transformers_module()
        known = causal_types()
        if o.config_dir is not None:
            base = self._folder_config(o.config_dir)
            model_type = str(base.model_type)
        else:
            model_type = str(o.model_type)
            if model_type not in known:
                raise UserError(f"family (hf): model_type {model_type!r} is not a causal LM that "
                                f"transformers {transformers.__version__} builds from a config; "
                                f"some that are: {', '.join(KNOWN_GOOD)} ({len(known)} in all)")
            base = transformers.AutoConfig.for_model(model_type)
        if model_type not in known:
            raise UserError(f"family (hf): {o.config_dir}: model type {model_type!r} is not a "
                            f"causal LM (some that are: {', '.join(KNOWN_GOOD)})")
        self._check_fixed(base, o.fixed)
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
            if not _has(base, key):
                raise UserError(f"family (hf): the {model_type} config has no {key}; the sizing "
                                f"rule cannot size it (some that it sizes: "
                                f"{', '.join(KNOWN_GOOD)})")
        # The arguments every size starts from: a folder's own settings, then the fixed options.
        args = base.to_diff_dict() if o.config_dir is not None else {}
        self._args = {k: v for k, v in {**args, **o.fixed}.items() if k not in NOT_MODEL}
        base.update(o.fixed)
        return base

    @staticmethod
    def _folder_config(folder: str) -> Any:
        path = os.path.expanduser(folder)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(f"family (hf): config_dir {folder!r} has no config.json")
        try:
            return transformers_module().AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            text = " ".join(str(err).split())[:200]
            raise UserError(f"family (hf): cannot read {path}/config.json: {text}") from None

    @staticmethod
    def _check_fixed(base: Any, fixed: dict) -> None:
        keys = base.to_dict()
        sized = {_own_name(base, k) for k in SIZE_KEYS} | set(SIZE_KEYS)
        for key in fixed:
            if key in sized or _own_name(base, key) in sized:
                raise UserError(f"family (hf): {key!r} is set by the sizing rule for each "
                                f"target size; leave it out")
            if key not in keys and _own_name(base, key) not in keys:
                raise UserError(f"family (hf): unknown key {key!r} (not a key of the "
                                f"{base.model_type} config, nor model_type, config_dir, "
                                f"block_size, min_layers)")

    def _config_args(self, n_layer: int, d: int, vocab: int) -> dict:
        """The complete config arguments of one size (the shape's `config`)."""
        base = self.base
        head = next(w for w in HEAD_WIDTHS if d % w == 0)
        n_head = d // head
        sized: dict[str, Any] = {"hidden_size": d, "num_hidden_layers": n_layer,
                                 "num_attention_heads": n_head, "vocab_size": vocab,
                                 "max_position_embeddings": self.context}
        if _has(base, "head_dim"):
            sized["head_dim"] = head
        if _has(base, "num_key_value_heads"):
            sized["num_key_value_heads"] = _kv_heads(base, n_head)
        mlp = next((k for k in MLP_KEYS if _has(base, k)), None)
        if mlp is not None:
            sized[mlp] = max(WIDTH_STEP, WIDTH_STEP * round(_mlp_ratio(base, mlp) * d
                                                            / WIDTH_STEP))
        args = dict(self._args)
        args.update({_own_name(base, k): v for k, v in sized.items()})
        pad = args.get("pad_token_id", getattr(base, "pad_token_id", None))
        if isinstance(pad, int) and pad >= vocab:  # a pad id of the config's own vocabulary
            args["pad_token_id"] = None  # (phi3's 32000): the task's has no padding token
        args["use_cache"] = False  # training only: no KV cache
        return args

    # -- the rule --------------------------------------------------------------------------------

    def _count(self, n_layer: int, d: int, vocab: int) -> int:
        """n_nonembed of a size, built on the meta device (cached)."""
        key = (n_layer, d, vocab)
        if key not in self._counts:
            shape = {"model_type": self.model_type,
                     "config": self._config_args(n_layer, d, vocab)}
            with torch.device("meta"):
                model = build_model(shape)
            self._counts[key] = hf_count_params(model)[1]
        return self._counts[key]

    def shape_for(self, target_n: float, io: TaskIO) -> dict:
        vocab = int(io.vocab_size or io.n_outputs)
        lo = self.options.min_layers

        def at_aspect(n_layer: int) -> int:
            return self._count(n_layer, width_of(knob_of(ASPECT * n_layer)), vocab)

        n_layer = closest_knob(target_n, at_aspect, lo=lo, hi=max(lo, MAX_LAYERS))
        k = closest_knob(target_n, lambda k: self._count(n_layer, width_of(k), vocab))
        return {"model_type": self.model_type,
                "config": self._config_args(n_layer, width_of(k), vocab)}

    def build(self, shape: dict) -> HFCausalLM:
        return build_model(shape)

    def count_params(self, model: nn.Module) -> tuple[int, int]:
        return hf_count_params(model)

    def describe(self, shape: dict) -> str:
        cfg = config_for(shape["model_type"], shape["config"])
        return f"{cfg.num_hidden_layers}x{cfg.hidden_size}"


def width_of(knob: int) -> int:
    """The width of a knob k >= 1: 16·k below WIDE (512), then 64 more per step."""
    steps_below = WIDE // WIDTH_STEP
    return WIDTH_STEP * knob if knob <= steps_below else WIDE + 64 * (knob - steps_below)


def knob_of(width: float) -> int:
    """The knob whose width is nearest `width` (at least 1)."""
    steps_below = WIDE // WIDTH_STEP
    if width <= WIDE:
        return max(1, round(width / WIDTH_STEP))
    return steps_below + round((width - WIDE) / 64)


def _kv_heads(base: Any, n_head: int) -> int:
    """The config's own share of KV heads at `n_head` heads, as a divisor of n_head."""
    heads = base.num_attention_heads
    kv = getattr(base, "num_key_value_heads", None) or heads
    want = max(1, round(n_head * kv / heads))
    return max(k for k in range(1, want + 1) if n_head % k == 0)


def _mlp_ratio(base: Any, key: str) -> float:
    """The config's MLP width over its hidden size (gpt2's None is 4 x hidden size)."""
    width = base.to_dict()[_own_name(base, key)]
    return GPT2_MLP_RATIO if width is None else width / base.hidden_size


__all__ = ["ASPECT", "HFCausalLM", "HFFamily", "HFOptions", "build_model", "causal_types",
           "hf_count_params"]
