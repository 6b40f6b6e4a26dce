"""``--set KEY=VALUE`` config overrides of the benchmark scripts (``search__generations=16``), parsed one way."""

from __future__ import annotations

import json


def parse_overrides(items: list[str]) -> dict:
    """``["key=value", ...]`` -> ``{key: value}``; a value that looks like JSON (a number, list, object, true,
    false, null) is parsed as JSON, anything else stays a string (``data__dataset=/path``)."""
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    return overrides
