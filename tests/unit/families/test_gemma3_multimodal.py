"""The text part of a multimodal Gemma3 checkpoint (``gemma3``) is loaded and pruned as ``gemma3_text``."""

import pytest
import torch

from tests.conftest import char_tokenizer
from tests.unit.families import test_contract as contract  # (a module: its Test classes are not collected twice)

pytestmark = pytest.mark.unit


@pytest.fixture
def multimodal_folder(tmp_path):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    text = contract.TestGemma3().config()
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          image_token_index=contract.COMMON["vocab_size"] - 3, boi_token_index=contract.COMMON["vocab_size"] - 2,
                          eoi_token_index=contract.COMMON["vocab_size"] - 1)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    char_tokenizer().save_pretrained(tmp_path)
    return tmp_path, model


def test_the_language_model_of_a_gemma3_checkpoint_is_loaded_alone(multimodal_folder):
    from optimum_subnet.families import get_adapter
    from optimum_subnet.loading import load_model

    folder, multimodal = multimodal_folder
    model, _ = load_model(str(folder))
    assert model.config.model_type == "gemma3_text" and not hasattr(model.model, "vision_tower")
    assert "gemma3_text" in get_adapter(model.config).model_types
    ids = torch.randint(3, 90, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = multimodal(input_ids=ids).logits, model(ids).logits
    # the multimodal class runs the same language model on text-only input: equal up to float noise
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_a_gemma3_checkpoint_is_pruned_as_its_text_part(multimodal_folder, tmp_path_factory):
    from optimum_subnet import SubnetOptimizer
    from optimum_subnet.stages.baselines import get_baseline
    from optimum_subnet.stages.surgery import extract_subnet

    folder, _ = multimodal_folder
    optimizer = SubnetOptimizer.from_pretrained(str(folder))
    windows = torch.randint(3, 90, (4, 24), generator=torch.Generator().manual_seed(1))
    result = get_baseline("flap").prune(optimizer.model, optimizer.adapter, windows, target_ratio=0.8, batch_size=2,
                                        device="cpu", attention_unit="pair")
    subnet = extract_subnet(optimizer.model, result.spec, optimizer.adapter)
    assert subnet.config.model_type == "subnet_gemma3"
