"""The search on several processes: 2 gloo processes on the CPU, started by torchrun (``torch.distributed.run``).

One launch runs ``tests/distributed_worker.py`` on two ranks (one thread each) and checks its files:
each rank evaluated exactly its share of a generation, the gathered values are every candidate's value
on both ranks, the pipeline over blocks (two blocks per rank) gives the single-process values, and a
distributed search killed after its second generation and resumed ends with the spec and report of a
single-process search with the same seed, written once, by rank 0, with a progress bar on rank 0 only
and logs that name the rank.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from optimum_subnet.distributed import shard
from optimum_subnet.distributed.pipeline import stage_bounds
from optimum_subnet.pipeline.report import without_timings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds; the launch takes well under a minute on an idle 2-core machine


def test_shards_cover_every_candidate_once():
    for count in range(0, 12):
        for world in (1, 2, 3, 5):
            shares = [shard(count, rank, world) for rank in range(world)]
            assert sorted(i for share in shares for i in share) == list(range(count))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    for layers in (4, 7, 32):
        for world in (1, 2, 3):
            bounds = [stage_bounds(layers, rank, world) for rank in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == layers
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def _launch(out: Path) -> Path:
    logs = out / "logs"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPTIMUM_SUBNET_NO_PROGRESS="0",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--redirects", "3", "--log-dir", str(logs), str(ROOT / "tests" / "distributed_worker.py"), str(out)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)  # its own process group: a timeout ends every worker
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s")
    assert process.returncode == 0, output.decode(errors="replace")[-4000:]
    return logs


def _rank_log(logs: Path, rank: int, stream: str) -> str:
    files = list(logs.rglob(f"attempt_0/{rank}/{stream}.log"))
    assert len(files) == 1, sorted(str(p) for p in logs.rglob("*"))
    return files[0].read_text(errors="replace")


def test_distributed_search_splits_gathers_and_matches_a_single_process(tmp_path):
    logs = _launch(tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # 1. the split: each rank evaluated exactly its share; the gather: every value, on both ranks
    for rank, result in enumerate(ranks):
        assert result["seen"] == result["expected_share"] == shard(7, rank, 2)
        assert result["gathered"] == result["reference"]  # the numbers the evaluating rank computed
    assert ranks[0]["gathered"] == ranks[1]["gathered"]
    # 2. the pipeline over blocks: layers 0-1 on rank 0, 2-3 on rank 1, same values as one process
    assert [r["stage"] for r in ranks] == [[0, 2], [2, 4]]
    for result in ranks:
        assert result["pipelined"] == pytest.approx(result["reference"], rel=1e-9)

    # 3. killed after generation 2 on every rank, resumed: the single-process spec and report
    assert ranks[0]["killed"] and ranks[1]["killed"]
    assert "search_state.json" in ranks[0]["checkpointed"] and ranks[1]["checkpointed"] == []
    distributed, single = tmp_path / "distributed", tmp_path / "single"
    assert (distributed / "subnet_config.json").read_text() == (single / "subnet_config.json").read_text()
    report = json.loads((distributed / "report.json").read_text())
    reference = json.loads((single / "report.json").read_text())
    assert report["timings"]["resumed_from_generation"] == 2
    spread = report["search"].pop("distributed")
    assert spread["world_size"] == 2 and spread["backend"] == "gloo"
    assert [r["rank"] for r in spread["ranks"]] == [0, 1] and all(r["evaluated"] > 0 for r in spread["ranks"])
    assert without_timings(report) == without_timings(reference)
    # written once, by rank 0; nothing else left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "logs") == [
        "cal.txt", "distributed", "rank0.json", "rank1.json", "single"]

    # logs name the rank; the progress bar is rank 0's alone
    rank0, rank1 = _rank_log(logs, 0, "stderr"), _rank_log(logs, 1, "stderr")
    assert "rank 1/2: fitness of 6 candidates, 3 evaluated here" in rank1
    assert "rank 1/2: search done; rank 0 reforms and writes" in rank1
    assert "Search:" in rank0 and "Search:" not in rank1 and "Importance:" not in rank1
