"""Zero-shot accuracy through lm-eval on local data: a tiny task end to end, the seven task configs."""

import functools

import pytest
import torch

from optimum_subnet.core.errors import SubnetError
import math
import statistics

from optimum_subnet.evaluation.zeroshot import (
    PAPER_TASKS,
    accuracy_stderr,
    evaluate_zero_shot,
    parse_tasks,
    task_configs,
)

pytestmark = pytest.mark.unit

DOCS = [
    {"question": "The sky is", "choices": [" blue.", " a banana with ideas."], "label": 0},
    {"question": "Two plus two is", "choices": [" xq zv.", " four."], "label": 1},
    {"question": "Fish live in", "choices": [" water.", " qqqq."], "label": 0},
    {"question": "Snow is", "choices": [" zzz!", " cold."], "label": 1},
    {"question": "A cat says", "choices": [" meow.", " 7#&."], "label": 0},
]


def _tiny_dataset(**_ignored):
    import datasets

    return {"validation": datasets.Dataset.from_list(DOCS)}


def _tiny_task():
    return {
        "task": "tiny_mc",
        "custom_dataset": functools.partial(_tiny_dataset),
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "doc_to_text": "{{question}}",
        "doc_to_target": "label",
        "doc_to_choice": "{{choices}}",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def test_tiny_local_task_scores_end_to_end_as_a_direct_computation(model, tokenizer):
    """The harness's accuracy on a local task equals picking, per document, the choice with the
    highest summed log-likelihood computed directly from the model's logits."""
    results = evaluate_zero_shot(model, tokenizer, configs=[_tiny_task()], batch_size=2)
    entry = results["tasks"]["tiny_mc"]
    assert entry["documents"] == len(DOCS)

    correct = 0
    with torch.no_grad():
        for doc in DOCS:
            context = tokenizer(doc["question"], add_special_tokens=False)["input_ids"]
            scores = []
            for choice in doc["choices"]:
                continuation = tokenizer(doc["question"] + choice, add_special_tokens=False)["input_ids"][len(context):]
                ids = torch.tensor([context + continuation])
                logprobs = model(ids).logits.log_softmax(-1)[0, len(context) - 1 : -1]
                scores.append(float(logprobs.gather(1, torch.tensor(continuation)[:, None]).sum()))
            # The harness scores padded batches, this loop single sequences: other float32 roundings, a
            # few ulps of the log-likelihoods' magnitude. A choice could flip only if its two scores were
            # that close: require a margin of 1e-4 of the magnitude, so the accuracies must agree exactly.
            assert abs(scores[0] - scores[1]) > 1e-4 * max(map(abs, scores)), (doc, scores)
            correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["label"])
    assert entry["acc"] == pytest.approx(correct / len(DOCS))
    assert entry["acc_stderr"] == pytest.approx(accuracy_stderr(entry["acc"], len(DOCS)))
    assert results["average"] is None and results["average_stderr"] is None  # averages: the paper tasks only
    assert results["harness"].startswith("lm-eval")


@pytest.mark.parametrize("outcomes", [[1, 0, 1, 1, 0, 0, 1], [1, 1, 1, 0], [0] * 5 + [1]])
def test_accuracy_stderr_is_the_sample_standard_deviation_over_sqrt_n(outcomes):
    mean = sum(outcomes) / len(outcomes)
    expected = statistics.stdev(outcomes) / math.sqrt(len(outcomes))
    assert accuracy_stderr(mean, len(outcomes)) == pytest.approx(expected)


def test_accuracy_stderr_of_one_document_is_undefined():
    assert accuracy_stderr(1.0, 1) is None


def test_paper_task_configs_read_the_local_copies():
    for task, config in zip(PAPER_TASKS, task_configs(PAPER_TASKS)):
        docs = config["custom_dataset"]()["validation"]
        assert len(docs) > 100, task
        assert config["test_split"] is None and config["validation_split"] == "validation"
        if task == "piqa":
            assert isinstance(docs[0]["label"], int)
        if task == "boolq":
            assert docs[0]["label"] in (0, 1)


def test_evaluate_model_honours_the_document_limit_and_checks_its_numbers(tiny_model_dir, text_files):
    from optimum_subnet.evaluation.perplexity import evaluate_model

    _, ev = text_files
    results = evaluate_model(str(tiny_model_dir), dataset=str(ev), seq_lens=[32], max_windows=1, device="cpu",
                             tasks="boolq", limit=3, zero_shot_batch_size=4)
    # the limit used to be overwritten by the model's position limit (256 documents instead of 3)
    assert results["zero_shot"]["tasks"]["boolq"]["documents"] == 3 and results["windows"] == {f"{ev}@32": 1}
    for bad, message in ((dict(max_windows=0), "max_windows must be a positive integer"),
                         (dict(batch_size=0), "batch_size must be a positive integer"),
                         (dict(zero_shot_batch_size=-1), "zero_shot_batch_size must be a positive integer"),
                         (dict(seq_lens=[32, 1]), "sequence lengths must be integers of at least 2 tokens"),
                         (dict(tasks="boolq", limit=0), "zero-shot limit must be a positive number")):
        with pytest.raises(SubnetError, match=message):
            evaluate_model("no-such-model", **bad)  # refused before the model is looked up


def test_task_names_are_checked():
    assert parse_tasks("all") == list(PAPER_TASKS)
    assert parse_tasks("piqa,boolq") == ["piqa", "boolq"]
    with pytest.raises(SubnetError, match="unknown zero-shot task"):
        parse_tasks("piqa,squad")
