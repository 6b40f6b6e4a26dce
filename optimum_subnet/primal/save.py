"""Saving a model with Primal-Attention layers as a checkpoint that loads with the plugin and, without
it, with ``trust_remote_code=True``.

In memory the converted model becomes an instance of its primal class (``PrimalLlamaForCausalLM``,
``PrimalSubnetLlamaForCausalLM``: subclasses of the model's own classes that add only the
construction of the primal layers, see ``modeling_primal``), so what is in memory is what loads.
Beside the weights: the config (``model_type`` ``primal_*``, the ``primal_attention`` entry and an
``auto_map``), ``modeling_primal.py`` (self-contained), and for a subnet base the subnet's own
modeling files plus the thin ``modeling_primal_subnet_llama.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

from optimum_subnet.primal.registration import CLASSES, auto_map

PRIMAL_DIR = Path(__file__).resolve().parent


def base_model_type(config) -> str:
    """The model type a primal model was converted from (``llama`` for ``primal_llama``, ...)."""
    for base, (config_cls, _, _) in CLASSES.items():
        if config.model_type in (base, config_cls.model_type):
            return base
    raise ValueError(f"not a Primal-Attention base or model: {config.model_type!r}")


def as_primal_model(model) -> None:
    """Turn ``model`` (with ``config.primal_attention`` set and its layers replaced) into an instance
    of its primal class, in place."""
    config_cls, lm_cls, _ = CLASSES[base_model_type(model.config)]
    model.config.__class__ = config_cls
    model.__class__ = lm_cls


def save_primal(model, tokenizer, folder, extra_files=()) -> None:
    """Weights (safetensors), config with ``auto_map``, modeling code and tokenizer into ``folder``;
    ``extra_files`` (e.g. a subnet's ``subnet_config.json``) are copied as they are."""
    folder = Path(folder)
    base = base_model_type(model.config)
    model.config.auto_map = auto_map(base)
    model.save_pretrained(folder, safe_serialization=True)
    sources: list[tuple[Path, dict]] = []
    if base != "llama":  # a subnet: its own modeling files, as save_subnet writes them
        from optimum_subnet.families import get_adapter_for_subnet
        from optimum_subnet.families.auto import SHARED_REMOTE_CODE

        families = PRIMAL_DIR.parent / "families"
        adapter = get_adapter_for_subnet(SimpleNamespace(model_type=base))
        for relative in SHARED_REMOTE_CODE + adapter.remote_code():
            sources.append((families / relative, {"from ..subnet_": "from .subnet_"}))
    for name in CLASSES[base][2]:
        sources.append((PRIMAL_DIR / name, {"from ..families.llama.": "from .", "from ..families.": "from ."}))
    for source, rewrites in sources:
        text = source.read_text(encoding="utf-8")
        for old, new in rewrites.items():
            text = text.replace(old, new)
        (folder / source.name).write_text(text, encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    for extra in extra_files:
        shutil.copyfile(extra, folder / Path(extra).name)
