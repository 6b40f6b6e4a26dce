"""Quality measures: held-out perplexity, zero-shot accuracy (lm-eval), faithfulness of explanations."""
