"""ORTGenerator on directly built graphs (CPU EP, fp32; the CUDA-graph path is the same code with the
graph captured: ``gpu`` tests): greedy tokens equal PyTorch's for dense models and heterogeneous
subnets, with left, right and no padding in one batch; seeded sampling; the one-line refusals."""

import pytest
import torch

from optimum_subnet import ORTSubnetModelForCausalLM, OnnxExportConfig, export_onnx
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.runtime.generator import ORTGenerator, SamplingConfig, create_session
from optimum_subnet.stages.surgery import extract_subnet
from tests.conftest import char_tokenizer, tiny_llama
from tests.numerics import assert_close_to_scale, assert_same_greedy_tokens, teacher_forced_logits
from tests.unit.test_onnx_builder import hetero_spec, wide_llama

pytestmark = pytest.mark.unit

NEW = 8


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    dense = wide_llama(seed=5)
    return {"dense": dense, "subnet": extract_subnet(dense, hetero_spec(dense))}


@pytest.fixture(scope="module")
def folders(nets, tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    return {name: export_onnx(net, root / name, OnnxExportConfig(validation_sequence_length=8),
                              tokenizer=char_tokenizer()) for name, net in nets.items()}


def padded_batch(seed=3):
    """Three rows: unpadded (11 tokens), left-padded (8 real), right-padded (6 real)."""
    ids = torch.randint(3, 90, (3, 11), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("which", ["dense", "subnet"])
def test_greedy_tokens_equal_pytorch_with_left_and_right_padding(nets, folders, which):
    net = nets[which]
    session = create_session(folders[which] / "model.onnx", "cpu")
    generator = ORTGenerator(session, max_length=32, batch_size=3)
    ids, mask = padded_batch()
    out = generator.generate(ids, mask, max_new_tokens=NEW)
    assert out.shape == (3, 11 + NEW) and torch.equal(out[:, :11], ids)
    for row in range(3):
        real = ids[row][mask[row].bool()][None]
        # each row alone in PyTorch (no padding at all): what a padded row must reproduce
        expected = net.generate(real, attention_mask=torch.ones_like(real), max_new_tokens=NEW, do_sample=False,
                                eos_token_id=None, pad_token_id=0)
        got = torch.cat([real, out[row:row + 1, 11:]], dim=1)
        # ONNX Runtime vs PyTorch: compared where no step is a near tie
        assert_same_greedy_tokens(got, expected, teacher_forced_logits(net, expected, NEW))
    assert generator.timing["decode_steps"] == NEW - 1 and generator.timing["prefill_s"] > 0


def test_model_class_generate_matches_transformers_on_a_left_padded_batch(nets, folders):
    """``ORTSubnetModelForCausalLM.generate`` (what users and ``subnet generate`` call) on a direct export:
    the same output layout and tokens as transformers' generate with left padding and an EOS."""
    net = nets["subnet"]
    model = ORTSubnetModelForCausalLM.from_pretrained(folders["subnet"])
    assert model.direct_graph is not None
    ids, mask = padded_batch(seed=7)
    ids, mask = ids[:2], mask[:2]  # transformers' batched generate wants one padding side: left
    greedy = net.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
    eos = int(greedy[0, 11 + 2])  # row 0 stops at its third token; row 1 goes on (unless it meets it too)
    expected = net.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=eos,
                            pad_token_id=0)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=eos,
                         pad_token_id=0)
    for row in range(2):  # no near tie decides a token (per row, its own real tokens)
        real = greedy[row][torch.cat([mask[row], torch.ones(NEW, dtype=mask.dtype)]).bool()][None]
        assert_same_greedy_tokens(real, real, teacher_forced_logits(net, real, NEW))
    assert torch.equal(got, expected), (got, expected)
    assert (got[0, 11 + 3:] == 0).all()  # finished rows continue with the pad token
    # and the whole-prompt logits (forward) equal PyTorch's on the attended positions
    with torch.no_grad():
        reference = net(ids, attention_mask=mask).logits
    logits = model(ids, attention_mask=mask).logits
    assert_close_to_scale(logits[mask.bool()], reference[mask.bool()], rel=1e-5)


def test_seeded_sampling(folders):
    session = create_session(folders["dense"] / "model.onnx", "cpu")
    generator = ORTGenerator(session, max_length=40, batch_size=3)
    ids, mask = padded_batch()
    greedy = generator.generate(ids, mask, max_new_tokens=NEW)
    config = SamplingConfig(do_sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=11)
    first = generator.generate(ids, mask, max_new_tokens=NEW, sampling=config)
    again = generator.generate(ids, mask, max_new_tokens=NEW, sampling=config)
    other = generator.generate(ids, mask, max_new_tokens=NEW, sampling=SamplingConfig(
        do_sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=12))
    assert torch.equal(first, again)  # the seed fixes the draw
    assert not torch.equal(first, other) and not torch.equal(first, greedy)
    # top_k=1 leaves one candidate: sampling is greedy decoding
    assert torch.equal(generator.generate(ids, mask, max_new_tokens=NEW, sampling=SamplingConfig(
        do_sample=True, top_k=1, seed=1)), greedy)


def test_a_smaller_batch_runs_in_a_larger_generator(folders):
    session = create_session(folders["dense"] / "model.onnx", "cpu")
    ids, mask = padded_batch()
    big = ORTGenerator(session, max_length=32, batch_size=3).generate(ids[1:], mask[1:], max_new_tokens=NEW)
    exact = ORTGenerator(session, max_length=32, batch_size=2).generate(ids[1:], mask[1:], max_new_tokens=NEW)
    assert torch.equal(big, exact)


def test_bad_inputs_are_one_line_errors_naming_the_fix(folders, nets, tmp_path):
    session = create_session(folders["dense"] / "model.onnx", "cpu")
    generator = ORTGenerator(session, max_length=16, batch_size=2)
    ids, mask = padded_batch()
    with pytest.raises(SubnetError, match=r"a batch of 3 does not fit this generator's buffers \(batch_size=2\): "
                                          r"create the generator with batch_size=3"):
        generator.generate(ids, mask, max_new_tokens=4)
    with pytest.raises(SubnetError, match=r"prompt of 11 tokens \+ max_new_tokens 6 exceeds max_length 16: use "
                                          r"max_length >= 17"):
        generator.generate(ids[:2], mask[:2], max_new_tokens=6)
    with pytest.raises(SubnetError, match="max_length 300 exceeds the 256 positions"):
        ORTGenerator(session, max_length=300, batch_size=1, max_positions=256)
    with pytest.raises(SubnetError, match="has no attended token"):
        generator.generate(ids[:1], torch.zeros_like(ids[:1]), max_new_tokens=2)
    with pytest.raises(SubnetError, match="max_new_tokens must be a positive integer"):
        generator.generate(ids[:1], max_new_tokens=0)
    with pytest.raises(SubnetError, match="temperature must be > 0"):
        SamplingConfig(do_sample=True, temperature=0)
    # a torch export (no fused decoder graph) cannot feed the generator
    torch_export = export_onnx(tiny_llama(), tmp_path / "torch", OnnxExportConfig(builder="torch"))
    with pytest.raises(SubnetError, match='exported without the fused decoder graph: re-export it with '
                                          'builder="direct"'):
        ORTGenerator(create_session(torch_export / "model.onnx", "cpu"), max_length=16)
    model = ORTSubnetModelForCausalLM.from_pretrained(folders["dense"])
    with pytest.raises(SubnetError, match="does not support num_beams"):
        model.generate(ids[:1], max_new_tokens=2, num_beams=2)
    with pytest.raises(SubnetError, match="exceeds the 256 positions this model holds: shorten the prompt"):
        model.generate(ids[:1], max_new_tokens=250)
    with pytest.raises(ValueError, match="keeps its KV cache in the generator's buffers"):
        model(ids[:1], past_key_values=((torch.zeros(1),) * 2,))
    with pytest.raises(ValueError, match="always decodes into fixed KV buffers"):
        model.enable_static_cache(64)


@pytest.mark.gpu
def test_cuda_graph_decoding_fp16(nets, tmp_path):
    """On a GPU: an fp16 direct export, decoded with the CUDA graph, agrees with PyTorch fp16 (near ties
    flip late tokens in fp16: at least 90% of the tokens agree) and is reused across calls."""
    net = nets["subnet"].to("cuda", torch.float16)
    path = export_onnx(net, tmp_path / "fp16", OnnxExportConfig(dtype="fp16", device="cuda"),
                       tokenizer=char_tokenizer())
    model = ORTSubnetModelForCausalLM.from_pretrained(path, provider="CUDAExecutionProvider")
    ids, mask = padded_batch()
    ids, mask = ids.cuda(), mask.cuda()
    out = model.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=32, do_sample=False, eos_token_id=None)
    assert model._generator.cuda_graph
    expected = net.generate(ids[:1], max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert (out[0, 11:] == expected[0, 11:]).float().mean() >= 0.9
    again = model.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=32, do_sample=False, eos_token_id=None)
    assert torch.equal(out, again)  # the captured graph replays the same computation
