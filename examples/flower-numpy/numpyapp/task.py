"""The model: `num-arrays` float32 arrays holding `total-params` values in all."""

import numpy as np


def initial_arrays(num_arrays, total_params):
    """Zeros, split as evenly as the count allows."""
    sizes = [total_params // num_arrays] * num_arrays
    sizes[-1] += total_params - sum(sizes)
    return [np.zeros(size, dtype=np.float32) for size in sizes]


def rng(partition_id, server_round):
    """The same draws for the same node and round, under any runtime."""
    return np.random.default_rng([partition_id, server_round])
