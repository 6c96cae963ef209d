"""Parallel scoring on Ray: each worker holds its own copy of the weight space and live model.

Workers are built from :class:`~dfwe.merge.fold.FoldSpec` (checkpoint paths and encoded dev data),
so they can live on other machines of a cluster that sees the same checkpoint paths. A batch of candidates
is dealt round-robin to the workers and the scores come back in ask order, so the journal is the same as a
serial run's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dfwe.errors import BadInput
from dfwe.merge.fold import FoldSpec
from dfwe.search.objective import Objective, Score


class _Worker:
    """One scorer process: folds built once, then candidates merged in place and scored."""

    def __init__(self, specs: Sequence[FoldSpec], granularity: str, block_size: int, objective: dict[str, Any],
                 threads: int):
        import torch

        torch.set_num_threads(threads)
        folds = [spec.build() for spec in specs]
        for fold in folds:
            fold.space.set_grouping(granularity, block_size)
        self.objective = Objective(folds, **objective)

    def score(self, weights: np.ndarray, fidelity: float) -> Score:
        return self.objective(weights, fidelity)


class RayScorer:
    """A :data:`~dfwe.search.run.BatchScorer` backed by ``workers`` Ray actors."""

    def __init__(self, specs: Sequence[FoldSpec], granularity: str, block_size: int, objective: dict[str, Any],
                 workers: int, address: str | None = None, gpus_per_worker: float = 0.0):
        try:
            import ray
        except ImportError:
            raise BadInput("search.workers > 1 needs Ray (pip install 'ray[default]')") from None
        self._ray = ray
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            except ConnectionError as error:
                raise BadInput(f"--ray-address {address}: cannot join the Ray cluster ({error})") from None
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(_Worker)
        self.actors = [actor.remote(list(specs), granularity, block_size, objective, 1) for _ in range(workers)]

    def __call__(self, batch: Sequence[np.ndarray], fidelity: float) -> list[tuple[Score, str]]:
        futures = [self.actors[i % len(self.actors)].score.remote(w, fidelity) for i, w in enumerate(batch)]
        scores = self._ray.get(futures)
        return [(score, f"ray-worker-{i % len(self.actors)}") for i, score in enumerate(scores)]

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
