"""``search --spec``: reform and save a given subnet instead of searching one."""

import json

import pytest

from optimum_subnet import SubnetSpec
from tests.bad_inputs import model_and_config, run_cli

pytestmark = pytest.mark.unit


def test_spec_from_a_previous_run_is_reformed_and_saved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTIMUM_SUBNET_NO_PROGRESS", "1")
    model_and_config(tmp_path)
    code, stderr = run_cli(["search", "--model", "tiny-llama", "--target-ratio", "0.7", "--config", "fast.json",
                            "--output", "searched"])
    assert code == 0, stderr[-3000:]
    monkeypatch.setattr("optimum_subnet.search.EvolutionarySearch.run", lambda *a: pytest.fail("searched anyway"))
    monkeypatch.setattr("optimum_subnet.stages.importance.compute_importance", lambda *a, **k: pytest.fail("importance"))
    code, stderr = run_cli(["search", "--model", "tiny-llama", "--spec", "searched", "--config", "fast.json",
                            "--output", "given"])  # no --target-ratio: the spec's
    assert code == 0, stderr[-3000:]
    searched, given = SubnetSpec.load(tmp_path / "searched"), SubnetSpec.load(tmp_path / "given")
    assert given.key() == searched.key()  # same structure; reformation ran again on it
    report = json.loads((tmp_path / "given" / "report.json").read_text())
    assert "search" not in report and report["spec"]["key"] == searched.key()
    assert report["target_ratio"] == pytest.approx(searched.inheriting_ratio())
    assert report["subnet"]["params"] == searched.params()
