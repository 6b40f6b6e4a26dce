"""Memory guard: the estimate's parts are the sizes of the tensors the pass really allocates, and a
run that cannot fit is refused before any data is read."""

import pytest
import torch

from optimum_subnet import SubnetConfig, SubnetOptimizer
from optimum_subnet.families import get_adapter
from optimum_subnet.calibration import BlockwiseRunner, GramAccumulator
from optimum_subnet.core.errors import ResourceError
from optimum_subnet.stages.importance import compute_importance
from optimum_subnet.pipeline.memory import MEMORY_LIMIT_ENV_VAR, check_memory, estimate_peak_memory, memory_budget
from optimum_subnet.stages.reformation import TwoFoldStatistics, reform
from optimum_subnet.core.spec import ModelShape, SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet
from optimum_subnet.core.files import parse_bytes
from tests.conftest import char_tokenizer, tiny_llama

pytestmark = pytest.mark.unit

SMOLLM2 = ModelShape(model_type="llama", hidden_size=576, num_layers=30, num_attention_heads=9, num_key_value_heads=3,
                     head_dim=64, intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True)


def _config(**overrides):
    return SubnetConfig.preset("fast", 0.7, data__num_samples=6, data__seq_len=24, data__batch_size=4,
                               data__eval_seq_len=32, search__fitness_seq_len=32, **overrides)


def test_estimate_parts_equal_the_tensors_the_pass_allocates(model, monkeypatch):
    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    config = _config()
    estimate = estimate_peak_memory(shape, config, dtype_bytes=4)
    d = config.data
    windows = torch.randint(3, 90, (d.num_samples, d.seq_len))

    assert estimate.stages["importance"]["model weights"] == sum(p.numel() * 4 for p in model.parameters())

    # Calibration activations: the hidden states entering a block, and those leaving it.
    runner = BlockwiseRunner(model, adapter, windows, d.batch_size, "cpu")
    states = runner.initial_states()
    outputs = runner.run_layer(adapter.decoder_layers(model)[0], states)
    real = sum(t.numel() * t.element_size() for t in states + outputs)
    assert estimate.stages["importance"]["calibration activations"] == real

    # Importance statistics: one block's float64 Gram matrices (+ the Cholesky inverse's 4 copies).
    sizes = {}
    add = GramAccumulator.add

    def recording_add(self, x, y=None):
        add(self, x, y)
        sizes[self.name] = self.sum.numel() * self.sum.element_size()

    monkeypatch.setattr(GramAccumulator, "add", recording_add)
    compute_importance(model, adapter, windows, d.batch_size, "cpu")
    one_block = sum(v for k, v in sizes.items() if k.startswith("layer 0 "))
    largest = max(v for k, v in sizes.items() if k.startswith("layer 0 "))
    assert estimate.stages["importance"]["importance statistics"] == one_block + 4 * largest

    # Reformation statistics: the two-fold second moments of W_down's inputs and their combination.
    # (A subnet keeping 3/4 of every layer's attention and MLP channels, so that the estimate's
    # average kept MLP width, derived from the block ratio, is that subnet's.)
    spec = SubnetSpec.dense(shape)
    kept = shape.intermediate_size * 3 // 4
    half = shape.head_dim // 2
    for layer in spec.layers:
        layer.mlp_channels = layer.mlp_channels[:kept]
        pairs = list(range(half * 3 // 4))
        layer.attention_channels = [pairs + [p + half for p in pairs] for _ in layer.kv_heads]
    ratio_config = _config().replace(target_ratio=spec.inheriting_ratio())
    estimate = estimate_peak_memory(shape, ratio_config, dtype_bytes=4, widest_mlp=kept)
    # before a search the widest layer is unknown: bounded by the whole MLP, which a search may keep
    unknown = estimate_peak_memory(shape, ratio_config, dtype_bytes=4)
    assert unknown.stages["reformation"]["reformation statistics"] == estimate_peak_memory(
        shape, ratio_config, dtype_bytes=4, widest_mlp=shape.intermediate_size).stages["reformation"][
        "reformation statistics"] > estimate.stages["reformation"]["reformation statistics"]
    folds = []
    monkeypatch.setattr(TwoFoldStatistics, "combined", _recording_combined(folds))
    reform(model, extract_subnet(model, spec, adapter), spec, adapter, windows, d.batch_size, "cpu")
    real = max(folds)
    # the solver's copies, as listed in solver_elements' docstring (read from least_squares.closed_form)
    solver = (5 * kept * kept + shape.intermediate_size * kept + shape.hidden_size * (shape.intermediate_size + 3 * kept)) * 8
    assert estimate.stages["reformation"]["reformation statistics"] == pytest.approx(real + solver, rel=0.02)


def _recording_combined(sizes):
    original = TwoFoldStatistics.combined

    def combined(self):
        out = original(self)
        accumulators = [getattr(s, n) for s in (*self.folds, out) for n in ("dense", "cross", "subnet")]
        sizes.append(sum(a.sum.numel() * 8 for a in accumulators))
        return out

    return combined


def test_refusal_names_the_largest_part_and_what_to_reduce():
    paper = SubnetConfig.preset("paper", 0.8)
    estimate = estimate_peak_memory(SMOLLM2, paper, dtype_bytes=4)
    # 128 x 2048 calibration tokens x 576 x 4 bytes, entering and leaving a block: 1.1 GiB.
    assert estimate.stages["importance"]["calibration activations"] == 2 * 128 * 2048 * 576 * 4
    with pytest.raises(ResourceError, match=r"^not enough memory on cpu: .*calibration activations 1\.1 GiB.*"
                                            r"reduce data\.num_samples or data\.seq_len$"):
        check_memory(estimate, budget=estimate.peak - 1)
    check_memory(estimate, budget=estimate.peak)  # fits exactly: no error
    half = estimate_peak_memory(SMOLLM2, paper.replace(data__num_samples=64), dtype_bytes=4)
    assert half.stages["importance"]["calibration activations"] * 2 == \
        estimate.stages["importance"]["calibration activations"]
    bf16 = estimate_peak_memory(SMOLLM2, paper, dtype_bytes=2)
    assert bf16.stages["search"]["model weights"] * 2 == estimate.stages["search"]["model weights"]


def test_selection_after_reformation_holds_two_subnets():
    """The best reformed subnet is kept while the next one is reformed: the stage counts two candidates."""
    base = SubnetConfig.preset("fast", 0.5, search__selection_windows=4)
    plain = estimate_peak_memory(SMOLLM2, base, dtype_bytes=4)
    both = estimate_peak_memory(SMOLLM2, base.replace(search__selection_after_reformation=True), dtype_bytes=4)
    assert both.stages["reformation"]["candidate weights"] == 2 * plain.stages["reformation"]["candidate weights"] > 0
    assert both.stages["search"] == plain.stages["search"]


def test_memory_budget_sources(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV_VAR, "3GiB")
    assert memory_budget("cpu", resident=10**9) == (3 * 2**30, f"${MEMORY_LIMIT_ENV_VAR}")
    monkeypatch.delenv(MEMORY_LIMIT_ENV_VAR)
    import psutil

    budget, source = memory_budget("cpu", resident=123)
    assert budget > 123 and source in ("available RAM", "available under the container's memory limit")
    assert budget <= psutil.virtual_memory().total + 123
    assert parse_bytes("512MB") == 512 * 10**6 and parse_bytes("1.5 GiB") == 3 * 2**29 and parse_bytes("100") == 100
    with pytest.raises(Exception, match="cannot read"):
        parse_bytes("lots")


def test_preflight_refuses_before_reading_any_data(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV_VAR, "1MiB")
    monkeypatch.setattr("optimum_subnet.data.load_texts", lambda *a, **k: pytest.fail("data read before refusal"))
    optimizer = SubnetOptimizer(tiny_llama(), char_tokenizer(), "tiny")
    with pytest.raises(ResourceError, match="not enough memory on cpu"):
        optimizer.optimize(_config(device="cpu"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    optimizer.preflight(_config(device="cpu"), tmp_path / "out", check_memory=False)  # the escape hatch


def test_memory_mapped_weights_are_not_counted_as_already_resident(tiny_model_dir):
    from optimum_subnet.loading import load_model
    from optimum_subnet.pipeline.memory import resident_weight_bytes

    in_memory = tiny_llama()
    assert resident_weight_bytes(in_memory) == sum(p.numel() * p.element_size() for p in in_memory.parameters())
    mapped, _ = load_model(str(tiny_model_dir))  # float32 file loaded as float32: transformers maps it
    copied, _ = load_model(str(tiny_model_dir), dtype="bfloat16")  # converted: a copy in process memory
    assert resident_weight_bytes(mapped) == 0
    assert resident_weight_bytes(copied) == sum(p.numel() * p.element_size() for p in copied.parameters())


def test_stage_peaks_record_nothing_on_the_cpu():
    from optimum_subnet.pipeline.memory import StagePeaks

    peaks = StagePeaks("cpu")
    with peaks.stage("importance"):
        torch.ones(1000)
    assert not peaks.enabled and peaks.peaks == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stage_peaks_measure_each_stage_alone():
    from optimum_subnet.pipeline.memory import StagePeaks

    peaks = StagePeaks("cuda")
    with peaks.stage("importance"):
        big = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
        del big
    with peaks.stage("search"):
        small = torch.empty(2**20, dtype=torch.uint8, device="cuda")
        del small
    assert peaks.peaks["importance"] >= 64 * 2**20
    assert peaks.peaks["search"] < peaks.peaks["importance"]  # the big tensor's peak was not carried over
