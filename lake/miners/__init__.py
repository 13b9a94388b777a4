"""Miners: active-learning selection over the lake (reference §6).

:mod:`~lake.miners.config` checks a miner's configuration, :mod:`~lake.miners.store` keeps
miners and their latest run in the ``miners`` table, :mod:`~lake.miners.mine` runs one
(candidates, scores or vectors, strategy), :mod:`~lake.miners.vectors` holds the vectorised
algorithms, :mod:`~lake.miners.runner` runs miners in the background.
"""

from lake.miners.config import MinerConfig, PoolQuery, Strategy
from lake.miners.mine import MiningError, mine, seed_of
from lake.miners.runner import MinerRunner
from lake.miners.store import Miner, Miners, Task, TaskStatus

__all__ = [
    "Miner",
    "MinerConfig",
    "MinerRunner",
    "Miners",
    "MiningError",
    "PoolQuery",
    "Strategy",
    "Task",
    "TaskStatus",
    "mine",
    "seed_of",
]
