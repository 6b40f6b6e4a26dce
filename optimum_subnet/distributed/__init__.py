"""Several processes (GPUs) for one run: the process group, the search's fitness split across
processes, and the evaluation of a model split by layers across processes (a pipeline over blocks)."""

from optimum_subnet.distributed.context import DistributedContext, environment_world_size
from optimum_subnet.distributed.fitness import DistributedFitness, shard

__all__ = ["DistributedContext", "DistributedFitness", "environment_world_size", "shard"]
