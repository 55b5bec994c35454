"""Which pagedlab model serves a Hugging Face checkpoint (by ``config.model_type``), and how its
config maps to pagedlab's (what pagedlab cannot run is refused here, before any weight loads).

``pl.from_hf(hf_model)`` converts a loaded transformers model; ``pl.from_pretrained(name)``
loads one by hub name or from a local folder first. See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

from importlib import import_module

from .errors import InvalidConfig

# model_type -> (module, class) of the pagedlab model that implements it
MODEL_CLASSES = {
    "gpt2": ("model", "GPT"),
    "llama": ("llama", "Llama"),
    "qwen2": ("llama", "Llama"),
    "mistral": ("llama", "Llama"),
}
# what from_pretrained passes on to AutoConfig (the rest goes to the model only)
CONFIG_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download")


def model_class(model_type: str | None):
    """The pagedlab class for a transformers ``model_type``, or InvalidConfig listing them."""
    if model_type not in MODEL_CLASSES:
        supported = ", ".join(f"{kind} ({MODEL_CLASSES[kind][1]})" for kind in MODEL_CLASSES)
        raise InvalidConfig(f"model_type {model_type!r} is not supported; pagedlab serves "
                            f"{supported}")
    module, name = MODEL_CLASSES[model_type]
    return getattr(import_module(f".{module}", __package__), name)


def from_hf(hf_model):
    """A pagedlab model equal to a loaded transformers causal LM (GPT-2, Llama, Qwen2, Mistral)."""
    config = getattr(hf_model, "config", None)
    return model_class(getattr(config, "model_type", None)).from_hf(hf_model)


def load_hf(name_or_path: str, **kwargs):
    """transformers' ``AutoModelForCausalLM`` for a checkpoint pagedlab supports, in eval mode.

    The config is read and checked first, so an unsupported checkpoint is refused before its
    weights are downloaded.
    """
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as error:
        from .model import INSTALL_HINT

        raise ImportError(INSTALL_HINT) from error
    config = AutoConfig.from_pretrained(
        name_or_path, **{key: kwargs[key] for key in CONFIG_KWARGS if key in kwargs})
    model_class(config.model_type)
    if config.model_type != "gpt2":
        llama_config_from_hf(config)  # refuses a sliding window or a RoPE type it cannot run
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs).eval()


def from_pretrained(name_or_path: str, **kwargs):
    """Load a checkpoint by hub name or local folder and convert it (class from model_type).

    Needs transformers (``pip install 'pagedlab[model]'``); ``kwargs`` go to its
    ``AutoModelForCausalLM.from_pretrained`` (e.g. ``dtype=torch.float16``).
    """
    return from_hf(load_hf(name_or_path, **kwargs))


# ------------------------------------------------------------------ Llama-family configs
LLAMA_TYPES = ("llama", "qwen2", "mistral")


def llama_config_from_hf(hf):
    """A :class:`~pagedlab.llama.LlamaConfig` from a transformers config, or InvalidConfig
    naming what pagedlab's Llama does not implement."""
    from .llama import LlamaConfig

    kind = getattr(hf, "model_type", None)
    if kind not in LLAMA_TYPES:
        raise InvalidConfig(f"model_type {kind!r} is not a Llama-family model: Llama.from_hf "
                            f"converts {', '.join(LLAMA_TYPES)} (pagedlab.from_hf also gpt2)")
    if getattr(hf, "hidden_act", "silu") != "silu":
        raise InvalidConfig(f"this {kind} config uses hidden_act={hf.hidden_act!r}; pagedlab's "
                            "Llama implements SwiGLU with silu only")
    window = sliding_window(hf)
    if window is not None and window < hf.max_position_embeddings:
        raise InvalidConfig(
            f"this {kind} config attends within a sliding window of {window} tokens but runs "
            f"{hf.max_position_embeddings} positions; pagedlab's Llama attends to the whole "
            "context. Use a checkpoint without a sliding window, or set the config's "
            f"max_position_embeddings to at most {window} before converting (within the "
            "window both are the same)")
    # transformers >= 5 keeps RoPE settings in rope_parameters; older ones in rope_theta and
    # rope_scaling
    rope = dict(getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {})
    theta = rope.pop("rope_theta", getattr(hf, "rope_theta", 10000.0))
    if rope.pop("partial_rotary_factor", 1.0) != 1.0:
        raise InvalidConfig("partial_rotary_factor != 1 (RoPE on part of each head) is not "
                            "supported")
    attention_bias = kind == "qwen2" or bool(getattr(hf, "attention_bias", False))
    return LlamaConfig(
        vocab_size=hf.vocab_size, max_position_embeddings=hf.max_position_embeddings,
        hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
        num_hidden_layers=hf.num_hidden_layers, num_attention_heads=hf.num_attention_heads,
        num_key_value_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        head_dim=getattr(hf, "head_dim", None), rms_norm_eps=hf.rms_norm_eps, rope_theta=theta,
        rope_scaling=rope or None, tie_word_embeddings=bool(hf.tie_word_embeddings),
        attention_bias=attention_bias,
        o_proj_bias=kind == "llama" and bool(getattr(hf, "attention_bias", False)),
        mlp_bias=bool(getattr(hf, "mlp_bias", False)))


def sliding_window(hf) -> int | None:
    """The window some layer of this config attends within, or None if every layer sees all."""
    window = getattr(hf, "sliding_window", None)
    if window is None or (hf.model_type == "qwen2" and not getattr(hf, "use_sliding_window", 0)):
        return None
    layer_types = getattr(hf, "layer_types", None)
    if layer_types is None and hf.model_type == "qwen2":  # older transformers: the last layers
        layer_types = ["sliding_attention" if i >= hf.max_window_layers else "full_attention"
                       for i in range(hf.num_hidden_layers)]
    return window if layer_types is None or "sliding_attention" in layer_types else None
