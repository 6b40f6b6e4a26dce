"""Stages of the pass over a model: importance, surgery, reformation, and the structured-pruning baselines."""
