"""Models larger than the accelerator: blocks streamed from CPU memory (calibration.offload).

On the CPU the streamer's transfer is a no-op by default; ``copy=True`` makes it a real copy, so these
tests see which blocks are on the "device" (a parameter whose storage is not its home storage) while
each block computes. Streamed passes run the same operations in the same order as resident ones, so
their results are compared exactly; the memory plan is tested on shapes alone.
"""

from __future__ import annotations

import logging
import random

import pytest
import torch

from optimum_subnet import SubnetConfig
from optimum_subnet.calibration.offload import BlockStreamer, head_on_device, streamed_forward
from optimum_subnet.core.errors import ResourceError
from optimum_subnet.core.spec import ModelShape
from optimum_subnet.families import get_adapter
from optimum_subnet.pipeline.fitness import PerplexityFitness
from optimum_subnet.pipeline.memory import estimate_peak_memory, plan_memory
from optimum_subnet.pipeline.stages import search_space
from optimum_subnet.pipeline.streamed import StreamedFitness
from optimum_subnet.stages.importance import compute_importance
from optimum_subnet.stages.reformation import reform
from optimum_subnet.stages.surgery import extract_subnet
from tests.conftest import tiny_llama

pytestmark = pytest.mark.unit


def _windows(count=5, length=40, seed=0):
    return torch.randint(3, 90, (count, length), generator=torch.Generator().manual_seed(seed))


class ResidencyProbe:
    """Inside every attention call, counts the decoder blocks whose weights are away from home (on the
    "device") and how many block copies the streamer holds."""

    def __init__(self, model, adapter, streamer):
        self.layers = list(adapter.decoder_layers(model))
        self.homes = [[p.data_ptr() for p in layer.parameters()] for layer in self.layers]
        self.streamer = streamer
        self.away: list[list[int]] = []
        self.loaded: list[int] = []
        self.handles = [layer.self_attn.register_forward_pre_hook(self._probe) for layer in self.layers]

    def _probe(self, _module, _args):
        self.away.append([i for i, (layer, homes) in enumerate(zip(self.layers, self.homes))
                          if any(p.data_ptr() != h for p, h in zip(layer.parameters(), homes))])
        self.loaded.append(self.streamer.resident)

    def at_home(self) -> bool:
        return all(p.data_ptr() == h for layer, homes in zip(self.layers, self.homes)
                   for p, h in zip(layer.parameters(), homes))

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _specs(model, count=6, seed=0, depth=True):
    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    config = SubnetConfig.preset("fast", 0.6, search__depth_search="on" if depth else "off",
                                 search__min_depth_ratio=0.5)
    generator = torch.Generator().manual_seed(seed)
    space = search_space(shape, config,
                         [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=generator)
                          for _ in range(shape.num_layers)],
                         [torch.rand(shape.intermediate_size, generator=generator) for _ in range(shape.num_layers)])
    rng = random.Random(seed)
    initial = space.initial()
    genomes = [initial]
    while len(genomes) < count:
        child = space.mutate(initial, rng, depth_prob=0.5 if depth else 0, ratio_prob=0.5, mask_prob=0.5,
                             overlap=0.8, reference=initial)
        if child is not None:
            genomes.append(child)
    return [space.to_spec(g) for g in genomes]


# ------------------------------------------------------------------------------- forward passes
def test_streamed_forward_equals_resident_with_at_most_two_blocks_loaded():
    model = tiny_llama()
    adapter = get_adapter(model.config)
    ids = _windows(2, 32)
    with torch.no_grad():
        reference = model(ids).logits
    streamer = BlockStreamer("cpu", copy=True)
    probe = ResidencyProbe(model, adapter, streamer)
    with torch.no_grad(), streamed_forward(model, adapter, streamer):
        first, second = model(ids).logits, model(ids).logits
    probe.remove()
    assert torch.equal(first, reference) and torch.equal(second, reference)  # same operations, same order
    layers = len(probe.layers)
    # exactly the computing block is away from home, in order, and at most two copies exist at a time
    assert probe.away == [[i] for i in range(layers)] * 2
    assert max(probe.loaded) <= 2 and streamer.peak_resident == 2
    assert probe.at_home() and streamer.resident == 0  # everything went back
    assert streamer.loads == 2 * layers + 1  # the extra one: block 0 prefetched for a next pass
    assert not any(hasattr(layer, "_hf_hook") for layer in probe.layers)  # accelerate's hooks removed


def test_head_on_device_restores_the_non_block_weights():
    model = tiny_llama()
    adapter = get_adapter(model.config)
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    with head_on_device(model, adapter, "cpu"):  # no-op move on the CPU; the modules it picks are checked
        pass
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == before


def test_blocks_streamed_together_must_not_share_weights():
    model = tiny_llama()
    layers = get_adapter(model.config).decoder_layers(model)
    streamer = BlockStreamer("cpu", copy=True)
    held = streamer.load([layers[0]], 0)
    streamer.acquire(held)
    with pytest.raises(RuntimeError, match="must not share weights"):
        streamer.load([layers[0]], 1)
    streamer.release(held)


# --------------------------------------------------------------------- calibration passes
def test_streamed_importance_equals_resident():
    model = tiny_llama()
    adapter = get_adapter(model.config)
    windows = _windows(6, 32)
    resident = compute_importance(model, adapter, windows, 2, "cpu")
    streamer = BlockStreamer("cpu", copy=True)
    probe = ResidencyProbe(model, adapter, streamer)
    streamed = compute_importance(model, adapter, windows, 2, "cpu", streamer=streamer)
    probe.remove()
    for name in ("attention", "mlp", "attention_fluctuation", "mlp_fluctuation"):
        for a, b in zip(getattr(resident, name), getattr(streamed, name)):
            assert torch.equal(a, b), name
    assert max(probe.loaded) <= 2 and all(len(away) == 1 for away in probe.away)
    assert probe.at_home() and streamer.loads == len(probe.layers)


def test_streamed_reformation_equals_resident_and_writes_the_reformed_weights_home():
    model = tiny_llama()
    adapter = get_adapter(model.config)
    windows = _windows(6, 32)
    spec = _specs(model, count=2, depth=False)[1]
    dense_before = {k: v.clone() for k, v in model.state_dict().items()}
    resident_subnet = extract_subnet(model, spec, adapter)
    resident = reform(model, resident_subnet, spec, adapter, windows, 2, "cpu")
    streamed_subnet = extract_subnet(model, spec, adapter, move=False)
    streamer = BlockStreamer("cpu", copy=True)
    streamed = reform(model, streamed_subnet, spec, adapter, windows, 2, "cpu", streamer=streamer)
    assert streamed.layers == resident.layers
    changed = 0
    for (name, a), b in zip(resident_subnet.state_dict().items(), streamed_subnet.state_dict().values()):
        assert torch.equal(a, b), name  # the reformed W_O / W_down came home from the "device" copies
        changed += not torch.equal(a, extract_subnet(model, spec, adapter).state_dict()[name])
    assert changed > 0  # the reformation did change weights (else the write-back would be untested)
    assert all(torch.equal(v, dense_before[k]) for k, v in model.state_dict().items())  # dense untouched
    assert streamer.peak_resident <= 2 and streamer.resident == 0


# ------------------------------------------------------------------------------- the search
@pytest.mark.parametrize("group_size,dtype", [(1, torch.float32), (3, torch.float32), (8, torch.float32),
                                              (3, torch.bfloat16)])
def test_streamed_fitness_equals_resident_fitness(group_size, dtype):
    model = tiny_llama().to(dtype)  # bfloat16: the dense rotary table is rounded, a subnet's is not
    adapter = get_adapter(model.config)
    windows, screening = _windows(5, 40), _windows(2, 16, seed=1)
    specs = _specs(model, count=7)
    assert any(len(spec.layers) < 4 for spec in specs)  # dropped layers (depth search) are covered
    resident = PerplexityFitness(model, adapter, windows, 2, screening)
    streamer = BlockStreamer("cpu", copy=True)
    streamed = StreamedFitness(model, adapter, windows, 2, streamer, screening, group_size=group_size)
    assert streamed.many(specs) == [resident(spec) for spec in specs]
    assert streamed.screen_many(specs[:3]) == [resident.screen(spec) for spec in specs[:3]]
    assert streamed(specs[2]) == resident(specs[2])
    groups = -(-len(specs) // group_size) + -(-3 // group_size) + 1
    # one stream of the (needed) dense blocks per group of candidates, never more than two loaded
    assert streamer.loads <= groups * 4 and streamer.peak_resident <= 2 and streamer.resident == 0
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_streamed_fitness_loads_each_block_once_per_group():
    model = tiny_llama()
    adapter = get_adapter(model.config)
    specs = _specs(model, count=6, depth=False)
    streamer = BlockStreamer("cpu", copy=True)
    StreamedFitness(model, adapter, _windows(2, 16), 2, streamer, group_size=3).many(specs)
    assert streamer.loads == 2 * 4  # two groups x four blocks


# ---------------------------------------------------------------------------- the memory plan
LLAMA_7B = ModelShape(model_type="llama", hidden_size=4096, num_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, head_dim=128, intermediate_size=11008, vocab_size=32000,
                      tie_word_embeddings=False)
GIB = 2**30


def _paper(**overrides):
    return SubnetConfig.preset("paper", 0.8, **{"data__num_samples": 16, "search__population_size": 16,
                                                 "search__num_mutations": 8, "search__num_crossovers": 4,
                                                 "search__top_k": 4, **overrides})


def test_offload_estimate_counts_two_blocks_instead_of_the_model():
    config = _paper()
    resident = estimate_peak_memory(LLAMA_7B, config, 2, "cuda")
    offloaded = estimate_peak_memory(LLAMA_7B, config, 2, "cuda", offload=True, candidate_group=4)
    block = LLAMA_7B.dense_block_params() // 32 * 2
    for stage in ("importance", "dense evaluation", "final evaluation"):
        assert offloaded.stages[stage]["streamed blocks"] == 2 * block
        assert "model weights" not in offloaded.stages[stage]
    assert offloaded.stages["reformation"]["streamed blocks"] > 2 * block  # dense + subnet pairs
    states = config.search.fitness_windows * config.search.fitness_seq_len * 4096 * 2
    assert offloaded.stages["search"]["candidate hidden states"] == 5 * states
    assert resident.peak - offloaded.peak > 10 * GIB  # 12.6 GiB of weights become two blocks


def test_plan_offloads_on_a_gpu_when_the_model_does_not_fit_and_says_so(caplog):
    config = _paper()
    resident = estimate_peak_memory(LLAMA_7B, config, 2, "cuda")
    budget = 24 * GIB  # the reformation's float64 statistics alone take ~14 GiB (widest layer: the whole MLP)
    assert resident.peak > budget
    with caplog.at_level(logging.INFO, logger="optimum_subnet.pipeline.memory"):
        plan = plan_memory(LLAMA_7B, config, 2, "cuda", budget, "test")
    assert plan.offload and plan.estimate.peak <= budget and plan.candidate_group == 16
    assert plan.describe()["plan"] == "offload" and plan.resident_peak == resident.peak
    assert any("stream" in record.getMessage() and record.levelno == logging.WARNING for record in caplog.records)


def test_plan_shrinks_the_candidate_group_to_what_fits():
    # long fitness windows and no reformation: the candidates' hidden states dominate the search's memory
    config = _paper(search__fitness_windows=32, reformation__method="none")
    full = plan_memory(LLAMA_7B, config, 2, "cuda", 16 * GIB, "test")
    assert full.offload and full.candidate_group == 16 and full.estimate.peak_stage == "search"
    states = 32 * 2048 * 4096 * 2
    smaller = plan_memory(LLAMA_7B, config, 2, "cuda", full.estimate.peak - 3 * states, "test")
    assert smaller.offload and smaller.candidate_group == 13 and smaller.estimate.peak <= full.estimate.peak - 3 * states


def test_plan_keeps_a_model_that_fits_resident_and_refuses_what_fits_neither_way():
    config = _paper()
    assert not plan_memory(LLAMA_7B, config, 2, "cuda", 80 * GIB, "test").offload
    with pytest.raises(ResourceError, match="even with its blocks streamed from CPU memory"):
        plan_memory(LLAMA_7B, config, 2, "cuda", 4 * GIB, "test")
    with pytest.raises(ResourceError, match="not enough memory on cuda"):
        plan_memory(LLAMA_7B, config.replace(offload="off"), 2, "cuda", 12 * GIB, "test")
    # on the CPU, streaming cannot help (the weights are in that memory already): the usual refusal
    with pytest.raises(ResourceError, match="not enough memory on cpu: the run needs"):
        plan_memory(LLAMA_7B, config, 2, "cpu", 12 * GIB, "test")
    assert plan_memory(LLAMA_7B, config.replace(offload="on"), 2, "cpu", 80 * GIB, "test").offload


# ------------------------------------------------------------------------------ the whole pass
def test_offloaded_optimize_ends_with_the_same_subnet_and_reports_the_plan(tmp_path):
    import json

    from tests.unit.test_resume import _config, _optimizer
    from optimum_subnet.pipeline.report import without_timings

    config = _config(tmp_path, search__generations=2, search__screening_keep=0.5, faithfulness__prompts=1)
    _optimizer().optimize(config, tmp_path / "resident")
    _optimizer().optimize(config.replace(offload="on"), tmp_path / "offload")
    read = lambda name: json.loads((tmp_path / name / "report.json").read_text())  # noqa: E731
    resident, offloaded = read("resident"), read("offload")
    assert ((tmp_path / "resident" / "subnet_config.json").read_text()
            == (tmp_path / "offload" / "subnet_config.json").read_text())
    assert resident["memory"]["plan"] == "resident" and offloaded["memory"]["plan"] == "offload"
    assert offloaded["memory"]["streaming"]["peak_resident_blocks"] <= 2
    for key in ("dense", "initial", "searched", "subnet", "faithfulness", "reformation"):
        assert without_timings(offloaded)[key] == without_timings(resident)[key], key


# ------------------------------------------------------------------------------------------ GPU
def _mid_llama(layers=6):
    """A LLaMA large enough that blocks dominate the GPU memory (fp16, 24 MiB a block)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=1024, intermediate_size=4096, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=128, max_position_embeddings=512,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.float16).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    return model


@pytest.mark.gpu
def test_gpu_streamed_passes_match_resident_and_hold_two_blocks():
    from tests.numerics import assert_close_to_scale

    model = _mid_llama()
    adapter = get_adapter(model.config)
    ids = torch.randint(0, 512, (2, 256), generator=torch.Generator().manual_seed(0))
    resident = _mid_llama().cuda()
    with torch.no_grad():
        expected = resident(ids.cuda()).logits.float()
    block = sum(p.numel() * p.element_size() for p in adapter.decoder_layers(model)[0].parameters())
    streamer = BlockStreamer("cuda")
    streamer.pin(list(adapter.decoder_layers(model)))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad(), streamed_forward(model, adapter, streamer):
        got = model(ids.cuda()).logits.float()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert_close_to_scale(got, expected, 1e-3)
    assert streamer.peak_resident == 2 and all(p.device.type == "cpu" for p in adapter.decoder_layers(model).parameters())
    head = sum(p.numel() * p.element_size() for m in (model.model.embed_tokens, model.lm_head) for p in m.parameters())
    activations = 2 * 256 * 4096 * 2 * 8  # generous: a few (batch x seq x mlp) fp16 tensors
    assert peak <= head + 2 * block + activations + 64 * 2**20, (peak, block)
    assert peak < sum(p.numel() * p.element_size() for p in model.parameters())  # less than the model

    windows = ids[:, :128]
    specs = _specs(model, count=3, depth=False)
    want = [PerplexityFitness(resident, adapter, windows.cuda(), 2)(spec) for spec in specs]
    with head_on_device(model, adapter, "cuda"):
        got_values = StreamedFitness(model, adapter, windows, 2, streamer, group_size=2).many(specs)
    assert got_values == pytest.approx(want, rel=1e-3)
    streamer.close()


@pytest.mark.gpu
def test_gpu_offloaded_pass_ends_like_the_resident_one(tmp_path):
    import json

    from tests.unit.test_resume import _config, _optimizer

    config = _config(tmp_path, device="cuda", search__generations=2, faithfulness__prompts=0)
    _optimizer().optimize(config, tmp_path / "resident")
    _optimizer().optimize(config.replace(offload="on"), tmp_path / "offload")
    resident, offloaded = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("resident", "offload"))
    assert offloaded["memory"]["plan"] == "offload" and offloaded["memory"]["streaming"]["device"].startswith("cuda")
    assert offloaded["memory"]["streaming"]["peak_resident_blocks"] <= 2
    for key in ("dense", "searched", "subnet"):
        assert list(offloaded[key]["ppl"].values()) == pytest.approx(list(resident[key]["ppl"].values()), rel=1e-4)
