"""JSON encodings that let a search be checkpointed and resumed exactly.

* A genome (one ``LayerGene | None`` per dense layer) is a JSON list of ``null`` or
  ``{"attention": [[unit, ...] per kept KV head], "mlp": [channel, ...]}``, with ``"heads": [kv head, ...]``
  when not every KV head is kept.
* ``genome_key`` is the SHA-256 of the layers' content digests (:attr:`LayerGene.digest`, computed once
  per gene: a child shares most genes with its parent, so keying it costs little). The fitness cache is
  keyed by it, so a checkpoint stores 64 characters per evaluated candidate instead of the candidate
  (a LLaMA-7B genome is ~350K integers; a paper-sized search evaluates 5000 of them).
* ``random.Random`` state is ``[version, [625 integers], gauss_next]``.

Everything is plain JSON (no pickle), and floats survive the round trip exactly (``repr``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from optimum_subnet.search.space import Genome, LayerGene


def genome_to_json(genome: Genome) -> list[Any]:
    return [None if gene is None else _gene_to_json(gene) for gene in genome]


def _gene_to_json(gene: LayerGene) -> dict[str, Any]:
    entry = {"attention": gene.attention.tolist(), "mlp": gene.mlp.tolist()}
    if gene.heads is not None:
        entry["heads"] = list(gene.heads)
    return entry


def genome_from_json(data: Any) -> Genome:
    """Inverse of :func:`genome_to_json`; ``ValueError`` on anything that is not a genome."""
    if not isinstance(data, list):
        raise ValueError("a genome is a list with one entry per layer")
    genes: list[LayerGene | None] = []
    for entry in data:
        if entry is None:
            genes.append(None)
            continue
        if not isinstance(entry, dict) or not {"attention", "mlp"} <= set(entry) <= {"attention", "mlp", "heads"}:
            raise ValueError("a layer gene is null or {'attention': [...], 'mlp': [...]} (and optionally 'heads')")
        attention = entry["attention"]
        if not isinstance(attention, list) or not attention:
            raise ValueError("a layer gene keeps at least one KV head")
        heads = _ints(entry["heads"]) if "heads" in entry else None
        if heads is not None and len(heads) != len(attention):
            raise ValueError("a layer gene needs one attention mask per kept KV head")
        heads_units = [_ints(head) for head in attention]
        if len({len(head) for head in heads_units}) != 1:
            raise ValueError("every kept KV head of a layer keeps the same number of units")
        genes.append(LayerGene(heads_units, _ints(entry["mlp"]), heads))
    return tuple(genes)


def _ints(values: Any) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError("expected a list of integers")
    return tuple(values)


def genome_key(genome: Genome) -> str:
    """Content hash of a genome: equal genomes, and only those, share a key."""
    h = hashlib.sha256()
    for gene in genome:
        h.update(b"\x00" * 32 if gene is None else gene.digest)
    return h.hexdigest()


def rng_state_to_json(state: tuple) -> list[Any]:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def rng_state_from_json(data: Any) -> tuple:
    if not (isinstance(data, list) and len(data) == 3 and isinstance(data[1], list)):
        raise ValueError("random state must be [version, [integers], gauss_next]")
    version, internal, gauss_next = data
    return int(version), tuple(int(v) for v in internal), None if gauss_next is None else float(gauss_next)
