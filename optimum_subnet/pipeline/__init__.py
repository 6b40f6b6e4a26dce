"""The pass that runs the stages in order: preflight, checkpoints, fitness, memory guard, reports."""
