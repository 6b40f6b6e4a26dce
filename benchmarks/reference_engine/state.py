"""JSON encodings that let a search be checkpointed and resumed exactly.

* A genome (one ``LayerGene | None`` per dense layer) is a JSON list of ``null`` or
  ``{"attention": [[unit, ...] per KV head], "mlp": [channel, ...]}``.
* ``genome_key`` is the SHA-256 of that encoding (compact, key order fixed). The fitness cache is
  keyed by it, so a checkpoint stores 64 characters per evaluated candidate instead of the candidate
  (a LLaMA-7B genome is ~350K integers; a paper-sized search evaluates 5000 of them).
* ``random.Random`` state is ``[version, [625 integers], gauss_next]``.

Everything is plain JSON (no pickle), and floats survive the round trip exactly (``repr``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .space import Genome, LayerGene


def genome_to_json(genome: Genome) -> list[Any]:
    return [None if gene is None else {"attention": [list(head) for head in gene.attention], "mlp": list(gene.mlp)}
            for gene in genome]


def genome_from_json(data: Any) -> Genome:
    """Inverse of :func:`genome_to_json`; ``ValueError`` on anything that is not a genome."""
    if not isinstance(data, list):
        raise ValueError("a genome is a list with one entry per layer")
    genes: list[LayerGene | None] = []
    for entry in data:
        if entry is None:
            genes.append(None)
            continue
        if not isinstance(entry, dict) or set(entry) != {"attention", "mlp"}:
            raise ValueError("a layer gene is null or {'attention': [...], 'mlp': [...]}")
        attention = entry["attention"]
        if not isinstance(attention, list) or not attention:
            raise ValueError("a layer gene keeps at least one KV head")
        genes.append(LayerGene(tuple(_ints(head) for head in attention), _ints(entry["mlp"])))
    return tuple(genes)


def _ints(values: Any) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError("expected a list of integers")
    return tuple(values)


def genome_key(genome: Genome) -> str:
    """Content hash of a genome: equal genomes, and only those, share a key."""
    payload = json.dumps(genome_to_json(genome), separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def rng_state_to_json(state: tuple) -> list[Any]:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def rng_state_from_json(data: Any) -> tuple:
    if not (isinstance(data, list) and len(data) == 3 and isinstance(data[1], list)):
        raise ValueError("random state must be [version, [integers], gauss_next]")
    version, internal, gauss_next = data
    return int(version), tuple(int(v) for v in internal), None if gauss_next is None else float(gauss_next)
