"""Saving a model with Primal-Attention layers as a checkpoint that loads with the plugin and, without
it, with ``trust_remote_code=True``.

In memory the converted model becomes an instance of its primal class (``PrimalQwen3ForCausalLM``,
``PrimalSubnetLlamaForCausalLM``, ...: subclasses of the model's own classes that add only the
construction of the primal layers, see ``modeling_primal.primal_classes``), so what is in memory is
what loads. Beside the weights: the config (``model_type`` ``primal_<base>``, the
``primal_attention`` entry and an ``auto_map``), ``modeling_primal.py`` (self-contained), a generated
entry module of a few lines that derives the primal classes from the family's own
(``modeling_primal_<base>.py``), and for a subnet base the subnet's own modeling files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from optimum_subnet.core.errors import UnsupportedModelError
from optimum_subnet.primal.registration import PRIMAL_REMOTE_CODE, PrimalFamily, auto_map, entry_module_source, family_of

PRIMAL_DIR = Path(__file__).resolve().parent


def primal_family(config) -> PrimalFamily:
    """The primal family of a base or primal model's config."""
    family = family_of(getattr(config, "model_type", None))
    if family is None:
        raise UnsupportedModelError(f"not a Primal-Attention base or model: {getattr(config, 'model_type', None)!r}")
    return family


def base_model_type(config) -> str:
    """The model type a primal model was converted from (``llama`` for ``primal_llama``, ...)."""
    return primal_family(config).base_model_type


def as_primal_model(model) -> None:
    """Turn ``model`` (with ``config.primal_attention`` set and its layers replaced) into an instance
    of its primal class, in place."""
    family = primal_family(model.config)
    model.config.__class__ = family.config
    model.__class__ = family.lm


def save_primal(model, tokenizer, folder, extra_files=()) -> None:
    """Weights (safetensors), config with ``auto_map``, modeling code and tokenizer into ``folder``;
    ``extra_files`` (e.g. a subnet's ``subnet_config.json``) are copied as they are."""
    folder = Path(folder)
    family = primal_family(model.config)
    model.config.auto_map = auto_map(family)
    model.save_pretrained(folder, safe_serialization=True)
    sources: list[tuple[Path, dict]] = []
    if family.subnet:  # a subnet: its own modeling files, as save_subnet writes them
        from optimum_subnet.families.auto import SHARED_REMOTE_CODE

        families = PRIMAL_DIR.parent / "families"
        for relative in SHARED_REMOTE_CODE + family.adapter.remote_code():
            sources.append((families / relative, {"from ..subnet_": "from .subnet_"}))
    for name in PRIMAL_REMOTE_CODE:
        sources.append((PRIMAL_DIR / name, {}))
    for source, rewrites in sources:
        text = source.read_text(encoding="utf-8")
        for old, new in rewrites.items():
            text = text.replace(old, new)
        (folder / source.name).write_text(text, encoding="utf-8")
    (folder / f"{family.entry_module()}.py").write_text(entry_module_source(family), encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    for extra in extra_files:
        shutil.copyfile(extra, folder / Path(extra).name)
