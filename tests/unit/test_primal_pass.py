"""The Primal-Attention pass end to end on the tiny model: config round trip, layer selectors,
``optimum-cli subnet primal`` (diagnosis; conversion with a fine-tune), resuming an interrupted
fine-tune, and loading the result."""

import json

import pytest
import torch

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.primal import PrimalConfig
from optimum_subnet.primal.config import resolve_layers
from tests.bad_inputs import run_cli
from tests.conftest import SAMPLE_TEXT, char_tokenizer, tiny_llama

pytestmark = pytest.mark.unit
SMALL = ["--calibration-dataset", "cal.txt", "--num-samples", "6", "--seq-len", "32", "--eval-seq-len", "32",
         "--eval-max-windows", "3"]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTIMUM_SUBNET_NO_PROGRESS", "1")
    tiny_llama().save_pretrained(tmp_path / "tiny", safe_serialization=True)
    char_tokenizer().save_pretrained(tmp_path / "tiny")
    (tmp_path / "cal.txt").write_text(SAMPLE_TEXT)
    return tmp_path


def test_config_round_trips_and_validates(tmp_path):
    config = PrimalConfig(layers="26-29", rank=8).replace(fine_tune__steps=300, data__num_samples=16)
    config.save_pretrained(tmp_path)
    again = PrimalConfig.from_pretrained(tmp_path)
    assert again == config and again.fine_tune.steps == 300
    data = json.loads((tmp_path / "primal_config.json").read_text())
    data["fine_tune"]["stepz"] = 1
    with pytest.raises(SubnetError, match="unknown Primal-Attention fine_tune option"):
        PrimalConfig.from_dict(data)


def test_layer_selectors():
    assert resolve_layers("last:2", 30) == [28, 29]
    assert resolve_layers("first:1", 30) == [0]
    assert resolve_layers("26-27,29", 30) == [26, 27, 29]
    assert resolve_layers("all", 3) == [0, 1, 2]
    for bad, message in [("last:0", "selects no layer"), ("last:31", "asks for 31 layers"),
                         ("30", "names layer 30"), ("middle", "unknown layer selector"), ("5-3", "is empty")]:
        with pytest.raises(SubnetError, match=message):
            resolve_layers(bad, 30)


def test_diagnose_writes_the_spectrum_of_every_layer_and_head(workspace):
    code, err = run_cli(["primal", "--model", "tiny", "--diagnose", "--output", "diag", "--calibration-dataset",
                         "cal.txt", "--seq-len", "24"])
    assert code == 0, err
    report = json.loads((workspace / "diag" / "spectrum.json").read_text())
    assert [entry["layer"] for entry in report["layers"]] == [0, 1, 2, 3]
    head = report["layers"][2]["heads"][5]
    assert len(report["layers"][0]["heads"]) == 6 and len(head["cumulative_singular_values"]) == 24
    assert head["cumulative_singular_values"][-1] == pytest.approx(1.0)
    assert 1 <= head["energy_ranks"]["0.9"] <= head["energy_ranks"]["0.95"] <= head["energy_ranks"]["0.99"] <= 24
    assert sorted(report["candidates"]) == [0, 1, 2, 3]
    assert (workspace / "diag" / "spectrum.png").stat().st_size > 0 and (workspace / "diag" / "spectrum.md").is_file()


def test_convert_with_fine_tune_resumes_an_interrupted_run_to_the_same_model(workspace, monkeypatch):
    from transformers import AutoModelForCausalLM

    from optimum_subnet.primal import finetune

    args = ["primal", "--model", "tiny", "--layers", "last:2", "--rank", "4", "--fine-tune-steps", "4", *SMALL]
    code, err = run_cli([*args, "--output", "straight"])
    assert code == 0, err
    report = json.loads((workspace / "straight" / "primal_report.json").read_text())
    assert set(report["perplexity"]) == {"base", "fit", "fine_tuned"}
    assert report["layers"] == [2, 3] and len(report["fine_tune"]["log"]) == 1
    config = json.loads((workspace / "straight" / "config.json").read_text())
    assert config["model_type"] == "primal_llama"
    assert config["primal_attention"]["layers"] == [{"layer": 2, "rank": 4}, {"layer": 3, "rank": 4}]

    original = finetune.Distiller.train

    def stop_after_first_checkpoint(self, states, config, seed, resume=None, checkpoint=None, progress=None):
        def save_then_die(state):
            checkpoint(state)
            raise KeyboardInterrupt

        return original(self, states, config, seed, resume, save_then_die, progress)

    cfg = PrimalConfig().replace(layers="last:2", rank=4, data__dataset="cal.txt", data__num_samples=6,
                                 data__seq_len=32, data__eval_seq_len=32, data__eval_max_windows=3,
                                 fine_tune__steps=4, fine_tune__checkpoint_every=2)
    cfg.save_pretrained(workspace / "cfg")
    monkeypatch.setattr(finetune.Distiller, "train", stop_after_first_checkpoint)
    code, err = run_cli(["primal", "--model", "tiny", "--config", "cfg/primal_config.json", "--output", "again"])
    assert code == 130 and "rerun with --resume" in err
    assert (workspace / "again.partial" / "finetune.safetensors").is_file() and not (workspace / "again").exists()
    monkeypatch.setattr(finetune.Distiller, "train", original)
    code, err = run_cli(["primal", "--model", "tiny", "--config", "cfg/primal_config.json", "--output", "again",
                         "--resume"])
    assert code == 0, err
    assert not (workspace / "again.partial").exists()
    code, err = run_cli(["primal", "--model", "tiny", "--config", "cfg/primal_config.json", "--output", "fresh"])
    assert code == 0, err
    resumed = AutoModelForCausalLM.from_pretrained(workspace / "again")
    fresh = AutoModelForCausalLM.from_pretrained(workspace / "fresh")
    ids = torch.randint(3, 90, (1, 20))
    with torch.no_grad():
        # same batches and learning rates by step, same optimizer state: the same weights up to the
        # summation order of a rerun (float32, 1e-4 relative to the logits' scale)
        a, b = resumed(ids).logits, fresh(ids).logits
    assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())
    assert json.loads((workspace / "again" / "primal_report.json").read_text())["fine_tune"]["log"] == \
        json.loads((workspace / "fresh" / "primal_report.json").read_text())["fine_tune"]["log"]


def test_convert_a_subnet_and_evaluate_it(workspace):
    from optimum_subnet.evaluation.perplexity import evaluate_model
    from optimum_subnet.stages.surgery import extract_subnet, save_subnet
    from tests.unit.test_modeling import _random_spec

    model = tiny_llama()
    spec = _random_spec(model, drop_layer=False)
    save_subnet(extract_subnet(model, spec), char_tokenizer(), spec, workspace / "subnet")
    code, err = run_cli(["primal", "--model", "subnet", "--layers", "3", "--rank", "2", "--output", "out", *SMALL])
    assert code == 0, err
    config = json.loads((workspace / "out" / "config.json").read_text())
    assert config["model_type"] == "primal_subnet_llama" and len(config["subnet_layers"]) == 4
    assert (workspace / "out" / "subnet_config.json").is_file()
    result = evaluate_model(str(workspace / "out"), dataset="cal.txt", seq_lens=(32,), max_windows=3, device="cpu")
    report = json.loads((workspace / "out" / "primal_report.json").read_text())
    # the pass measured the same windows from cached prefix states: the same numbers in another order
    assert result["ppl"]["cal.txt@32"] == pytest.approx(report["perplexity"]["fit"], rel=1e-4)
