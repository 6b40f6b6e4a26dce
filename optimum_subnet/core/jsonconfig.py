"""JSON persistence shared by the pass configurations (:class:`~optimum_subnet.core.config.SubnetConfig`,
:class:`~optimum_subnet.primal.config.PrimalConfig`), in the style of optimum's configs:
``save_pretrained`` / ``from_pretrained`` / ``to_dict`` / ``from_dict`` and ``replace`` with nested
overrides. A configuration is a dataclass whose section fields are dataclasses too; unknown options and
values of the wrong kind are one-line :class:`SubnetError`\\ s in the caller's terms."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

from optimum_subnet.core.errors import SubnetError


class JsonConfig:
    """Mixed into a dataclass configuration. Subclasses declare:

    * ``CONFIG_NAME``: the file name in a ``save_pretrained`` folder;
    * ``SECTIONS``: field name -> section dataclass (rebuilt from dicts by ``from_dict``);
    * ``DESCRIPTION``: what errors call it ("subnet configuration");
    * ``OPTION_PREFIX``: put before a section name in "unknown ... option(s)" errors ("" or "Primal-Attention ").
    """

    CONFIG_NAME: ClassVar[str]
    SECTIONS: ClassVar[dict[str, type]]
    DESCRIPTION: ClassVar[str]
    OPTION_PREFIX: ClassVar[str] = ""

    def replace(self, **overrides: Any):
        """Copy with overrides (``None`` keeps a value); nested fields as ``search__generations=3`` or a
        dict of a section's fields."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if "__" in key:
                section, name = key.split("__", 1)
                data[section][name] = value
            elif isinstance(value, dict):
                data[key].update(value)
            else:
                data[key] = value
        return type(self).from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise SubnetError(f"a {cls.DESCRIPTION} is a JSON object, got {type(data).__name__}")
        data = dict(data)
        try:
            for name, section_cls in cls.SECTIONS.items():
                if name in data and not isinstance(data[name], section_cls):
                    data[name] = section_cls(**cls._known(section_cls, data[name], name))
            return cls(**cls._known(cls, data, "config"))
        except TypeError as e:
            raise SubnetError(f"invalid {cls.DESCRIPTION}: {e}") from None

    @classmethod
    def _known(cls, section_cls, values, where: str) -> dict:
        if not isinstance(values, dict):
            raise SubnetError(f"invalid {cls.DESCRIPTION}: {where} must be a JSON object, got "
                              f"{type(values).__name__}")
        names = {f.name for f in dataclasses.fields(section_cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise SubnetError(f"unknown {cls.OPTION_PREFIX}{where} option(s): {', '.join(unknown)}")
        return values

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        from optimum_subnet.core.files import write_json

        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / self.CONFIG_NAME, self.to_dict())
        return path / self.CONFIG_NAME

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike):
        from optimum_subnet.core.files import read_json

        path = Path(path)
        if path.is_dir():
            path = path / cls.CONFIG_NAME
        data = read_json(path)
        if not isinstance(data, dict):
            raise SubnetError(f"{path} is not a {cls.DESCRIPTION} (a JSON object), got a JSON {type(data).__name__}")
        return cls.from_dict(data)
