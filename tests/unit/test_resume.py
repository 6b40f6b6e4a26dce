"""Resumable searches: engine state round trips, in-process crashes, and a real SIGKILL.

The claim under test: a search killed at any point and resumed from its last checkpoint ends with
exactly the same subnet spec and report (timing fields aside, ``reporting.TIMING_FIELDS``) as an
uninterrupted run with the same seed.
"""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimum_subnet import SubnetConfig, SubnetOptimizer
from optimum_subnet.pipeline import checkpoint
from optimum_subnet.core.errors import CheckpointError, SubnetError
from optimum_subnet.pipeline.report import without_timings
from optimum_subnet.core.config import SearchConfig
from optimum_subnet.search import EvolutionarySearch
from optimum_subnet.search.state import (genome_from_json, genome_key, genome_to_json, rng_state_from_json,
                                         rng_state_to_json)
from tests.conftest import SAMPLE_TEXT, char_tokenizer, tiny_llama
from tests.unit.test_evolution import _fitness, _space

pytestmark = pytest.mark.unit

SETTINGS = SearchConfig(population_size=10, num_mutations=5, num_crossovers=3, top_k=3, generations=6)


class Killed(BaseException):
    """Stands in for a kill right after a checkpoint was written."""


def _comparable(result):
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    return (result.best, result.best_fitness, result.initial_fitness, result.best_fitness_per_generation,
            result.evaluations, history)


# ------------------------------------------------------------------------------------ engine
def test_genome_and_rng_encodings_round_trip_through_json():
    space = _space()
    rng = random.Random(3)
    genome = space.mutate(space.initial(), rng, depth_prob=0, ratio_prob=0.5, mask_prob=0.5, overlap=0.8)
    genome = genome[:2] + (None,) + genome[3:]  # a dropped layer (depth pruning) round trips too
    assert genome_from_json(json.loads(json.dumps(genome_to_json(genome)))) == genome
    assert genome_key(genome) == genome_key(genome_from_json(genome_to_json(genome)))
    assert genome_key(genome) != genome_key(space.initial())
    state = rng_state_from_json(json.loads(json.dumps(rng_state_to_json(rng.getstate()))))
    clone = random.Random()
    clone.setstate(state)
    assert [clone.random() for _ in range(5)] == [rng.random() for _ in range(5)]


@pytest.mark.parametrize("killed_after", [1, 3, 5])
def test_resumed_engine_matches_uninterrupted_run(killed_after):
    space = _space()
    calls = {"uninterrupted": 0, "killed": 0, "resumed": 0}

    def counting(name):
        fitness = _fitness(space)

        def f(specs):
            calls[name] += len(specs)
            return fitness(specs)
        return f

    reference = EvolutionarySearch(space, SETTINGS, counting("uninterrupted"), seed=5).run(space.initial())

    saved = {}

    def checkpoint_then_die(state):
        saved["json"] = json.dumps(state)  # what search_state.json holds
        if state["generation"] == killed_after:
            raise Killed()

    with pytest.raises(Killed):
        EvolutionarySearch(space, SETTINGS, counting("killed"), seed=5, checkpoint=checkpoint_then_die).run(
            space.initial())
    resumed = EvolutionarySearch(space, SETTINGS, counting("resumed"), seed=999)  # the seed comes from the state
    resumed.load_state_dict(json.loads(saved["json"]))
    assert resumed.generation == killed_after
    result = resumed.run(space.initial())
    assert _comparable(result) == _comparable(reference)
    # The restored fitness cache spares every evaluation made before the kill.
    assert calls["killed"] + calls["resumed"] == calls["uninterrupted"] == reference.evaluations


def test_load_state_rejects_states_that_do_not_fit():
    space = _space()
    states = []
    EvolutionarySearch(space, SETTINGS, _fitness(space), seed=1, checkpoint=states.append).run(space.initial())
    good = json.loads(json.dumps(states[2]))

    def fresh(settings=SETTINGS):
        return EvolutionarySearch(space, settings, _fitness(space), seed=1)

    other = dataclasses.replace(SETTINGS, top_k=4)
    with pytest.raises(CheckpointError, match="other search settings .*top_k"):
        fresh(other).load_state_dict(good)
    for damage, message in [
        (lambda s: s.update(format_version=7), "format_version"),
        (lambda s: s.update(generation=99), "generation 99"),
        (lambda s: s["top"][0][0].update(mlp=[0, 0]), "invalid subnet"),
        (lambda s: s.update(cache=[]), "no cached fitness"),
        (lambda s: s.update(rng=[3, [1, 2], None]), "malformed"),
        (lambda s: s.pop("history"), "malformed"),
        (lambda s: s["cache"][0].__setitem__(1, "NaN"), "malformed"),
    ]:
        broken = json.loads(json.dumps(good))
        damage(broken)
        with pytest.raises(CheckpointError, match=message):
            fresh().load_state_dict(broken)
    search = fresh()
    search.load_state_dict(good)
    with pytest.raises(CheckpointError, match="another initial subnet"):
        search.run(space.mutate(space.initial(), random.Random(0), depth_prob=0, ratio_prob=1, mask_prob=1,
                                overlap=0.5))


# --------------------------------------------------------------------------------- optimizer
def _config(folder: Path, **overrides) -> SubnetConfig:
    (folder / "cal.txt").write_text(SAMPLE_TEXT)
    settings = dict(
        device="cpu", search__generations=4, search__population_size=4, search__num_mutations=2,
        search__num_crossovers=1, search__top_k=2, search__fitness_windows=2, search__fitness_seq_len=32,
        data__dataset=str(folder / "cal.txt"), data__num_samples=8, data__seq_len=32, data__eval_seq_len=32,
        data__eval_max_windows=4)
    return SubnetConfig.preset("fast", 0.7, **{**settings, **overrides})


def _optimizer():
    return SubnetOptimizer(tiny_llama(), char_tokenizer(), "tiny")


def test_optimizer_resume_after_crash_matches_and_refuses_other_inputs(tmp_path, monkeypatch):
    config = _config(tmp_path)
    _optimizer().optimize(config, tmp_path / "reference")
    assert not (tmp_path / "reference.partial").exists()  # the work folder goes once the output is in place

    original = checkpoint.RunDirectory.save_search_state

    def save_then_die(self, state):
        original(self, state)
        if state["generation"] == 2:
            raise Killed()

    out = tmp_path / "out"
    monkeypatch.setattr(checkpoint.RunDirectory, "save_search_state", save_then_die)
    with pytest.raises(Killed):
        _optimizer().optimize(config, out)
    monkeypatch.setattr(checkpoint.RunDirectory, "save_search_state", original)
    assert not out.exists()
    assert {p.name for p in (tmp_path / "out.partial").iterdir()} >= {
        "fingerprint.json", "pre_search.json", "importance.safetensors", "search_state.json"}

    with pytest.raises(SubnetError, match="pass resume=True to continue it or overwrite=True"):
        _optimizer().optimize(config, out)  # never silently discards the interrupted run
    with pytest.raises(CheckpointError, match=r"differs in: config\.seed"):
        _optimizer().optimize(config.replace(seed=1), out, resume=True)
    with pytest.raises(CheckpointError, match=r"differs in: model\.weights"):
        SubnetOptimizer(tiny_llama(seed=1), char_tokenizer(), "tiny").optimize(config, out, resume=True)
    assert (tmp_path / "out.partial" / "search_state.json").is_file()  # refusals keep the checkpoint

    # The resumed run skips the stages before the search (read back from the work folder).
    monkeypatch.setattr("optimum_subnet.stages.importance.compute_importance",
                        lambda *a, **k: pytest.fail("importance recomputed on resume"))
    _optimizer().optimize(config, out, resume=True)
    assert (out / "subnet_config.json").read_text() == (tmp_path / "reference" / "subnet_config.json").read_text()
    resumed = json.loads((out / "report.json").read_text())
    reference = json.loads((tmp_path / "reference" / "report.json").read_text())
    assert resumed["timings"]["resumed_from_generation"] == 2
    assert without_timings(resumed) == without_timings(reference)
    assert not (tmp_path / "out.partial").exists()


def test_same_seed_same_spec_and_environment_recorded(tmp_path):
    config = _config(tmp_path, search__generations=2)
    a, b = _optimizer().run(config), _optimizer().run(config)
    assert a["spec"].to_dict() == b["spec"].to_dict()
    assert without_timings(a["report"]) == without_timings(b["report"])
    environment = a["report"]["environment"]
    import importlib.metadata as md

    assert environment["seed"] == config.seed
    assert environment["versions"]["torch"] == md.version("torch")
    assert environment["versions"]["transformers"] == md.version("transformers")
    assert environment["torch_threads"] >= 1 and "deterministic_algorithms" in environment


# ---------------------------------------------------------------------------- real SIGKILL
def _cli(folder: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OPTIMUM_SUBNET_NO_PROGRESS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "optimum.commands.optimum_cli", "subnet", "search", "--model", "tiny-llama",
            "--target-ratio", "0.7", "--config", "config.json", "--device", "cpu", *extra]
    return subprocess.Popen(args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _generation(state_file: Path) -> int:
    try:
        return json.loads(state_file.read_text())["generation"]
    except (OSError, ValueError):
        return 0


def test_search_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "tiny-llama", safe_serialization=True)
    char_tokenizer().save_pretrained(tmp_path / "tiny-llama")
    generations = 12
    _config(tmp_path, search__generations=generations).replace(data__dataset="cal.txt").save_pretrained(tmp_path)
    (tmp_path / "subnet_optimization.json").rename(tmp_path / "config.json")

    reference = _cli(tmp_path, "--output", "reference")
    victim = _cli(tmp_path, "--output", "out")
    state = tmp_path / "out.partial" / "search_state.json"
    deadline = time.monotonic() + 300
    while _generation(state) < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    _, stderr = victim.communicate()
    assert victim.returncode == -signal.SIGKILL, stderr[-3000:]
    killed_at = _generation(state)
    assert 2 <= killed_at < generations  # really killed mid-search
    assert not (tmp_path / "out").exists()

    resumed = _cli(tmp_path, "--output", "out", "--resume")
    for process in (reference, resumed):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    assert (tmp_path / "out" / "subnet_config.json").read_text() == \
        (tmp_path / "reference" / "subnet_config.json").read_text()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["timings"]["resumed_from_generation"] == killed_at
    assert without_timings(report) == without_timings(json.loads((tmp_path / "reference" / "report.json").read_text()))
    assert not (tmp_path / "out.partial").exists()
