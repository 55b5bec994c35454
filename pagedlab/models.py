"""Which pagedlab model serves a Hugging Face checkpoint, chosen by its ``config.model_type``.

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
        from .llama import config_from_hf

        config_from_hf(config)  # refuses a sliding window or a RoPE type it cannot run
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs).eval()


def from_pretrained(name_or_path: str, **kwargs):
    """Load a checkpoint by hub name or local folder and convert it (class from model_type).

    Needs transformers (``pip install 'pagedlab[model]'``); ``kwargs`` go to its
    ``AutoModelForCausalLM.from_pretrained`` (e.g. ``dtype=torch.float16``).
    """
    return from_hf(load_hf(name_or_path, **kwargs))
