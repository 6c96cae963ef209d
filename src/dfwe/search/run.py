"""The search loop: ask a batch, score it, journal it, tell it; exactly ``budget`` candidates.

Candidates are asked in batches of ``batch`` (the number of parallel workers a run is configured for) and
told back in ask order, whoever scored them; so a serial run and a parallel run with the same seed and
batch produce the same journal. On resume the journal is replayed through a fresh optimiser: each asked
point must match its journalled one, its journalled score is told, and nothing journalled is scored again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dfwe.config import SearchConfig
from dfwe.errors import BadInput
from dfwe.progress import progress_bar
from dfwe.search.journal import Journal, Record
from dfwe.search.objective import DevFold, Objective, Score
from dfwe.search.optimizers import Optimizer, make_optimizer
from dfwe.search.spaces import SearchSpace, make_space

# Scores a batch of weight matrices; returns one (Score, worker name) per candidate, in order.
BatchScorer = Callable[[Sequence[np.ndarray]], list[tuple[Score, str]]]


@dataclass(frozen=True)
class SearchResult:
    """Every scored candidate, and the best one (lowest objective; earliest on ties)."""

    records: tuple[Record, ...]
    optimizer: str
    seed: int

    @property
    def best(self) -> Record:
        return min(self.records, key=lambda r: (r.objective, r.idx))

    @property
    def best_so_far(self) -> list[float]:
        return np.minimum.accumulate([r.objective for r in self.records]).tolist()


def serial_scorer(objective: Callable[[np.ndarray], Score]) -> BatchScorer:
    """Score a batch one candidate after another in this process."""
    return lambda batch: [(objective(weights), "local") for weights in batch]


def _ask_batch(optimizer: Optimizer, size: int) -> list[np.ndarray]:
    asked: list[np.ndarray] = []
    while len(asked) < size:
        x = optimizer.ask()
        if x is None:
            break
        asked.append(np.asarray(x, dtype=np.float64))
    if not asked:
        raise RuntimeError(f"optimizer '{optimizer.name}' proposed no candidate")
    return asked


def run_search(space: SearchSpace, optimizer: Optimizer, score_batch: BatchScorer, budget: int,
               journal: Journal | None = None, batch: int = 1, desc: str = "search") -> SearchResult:
    """Score exactly ``budget`` candidates (replaying any the journal already holds)."""
    if budget < 1:
        raise BadInput(f"budget: must be at least 1 (got {budget})")
    journalled = journal.records() if journal is not None else []
    if len(journalled) > budget:
        raise BadInput(f"journal holds {len(journalled)} candidates, more than the budget of {budget}")
    records: list[Record] = []
    bar = progress_bar(budget, desc)
    while len(records) < budget:
        asked = _ask_batch(optimizer, min(batch, budget - len(records)))
        replayed = []
        for x in asked:
            idx = len(records) + len(replayed)
            if idx >= len(journalled):
                break
            if not np.allclose(journalled[idx].x, x, rtol=1e-9, atol=1e-12):
                raise BadInput(f"journal candidate {idx} differs from what the optimiser asks on replay; "
                               "the journal belongs to another search")
            replayed.append(journalled[idx])
        fresh = asked[len(replayed):]
        scored = score_batch([space.to_weights(x) for x in fresh]) if fresh else []
        for x, (score, worker) in zip(fresh, scored):
            record = Record(idx=len(records) + len(replayed), x=x, weights=space.to_weights(x), objective=score.value,
                            metrics=score.metrics, fidelity=1.0, seconds=score.seconds, worker=worker)
            if journal is not None:
                journal.append(record)
            replayed.append(record)
        for x, record in zip(asked, replayed):
            optimizer.tell(x, record.objective)
        records.extend(replayed)
        bar.update(len(replayed))
        bar.set_postfix(best=f"{min(r.objective for r in records):.4f}")
    bar.close()
    return SearchResult(records=tuple(records), optimizer=optimizer.name, seed=optimizer.seed)



def search_weights(folds: Sequence[DevFold], config: SearchConfig, seed: int, journal_path: Path | None = None,
                   init: np.ndarray | None = None, anchor: np.ndarray | None = None) -> tuple[SearchSpace, SearchResult]:
    """Search merge weights for the folds' shared weight space on dev data, as ``config`` says.

    The space's grouping is set from ``config``; ``init`` (``[ingredients]``) is the start point and
    ``anchor`` the target of the ``anchor`` penalty. Returns the search space and every scored candidate.
    """
    weight_space = folds[0].space
    for fold in folds:
        fold.space.set_grouping(config.granularity, config.block_size)
    space = make_space(config.space, weight_space.grouping.size, weight_space.num_ingredients, init)
    anchor_matrix = None if anchor is None else np.broadcast_to(anchor, (space.groups, space.ingredients))
    objective = Objective(folds, method=space.method, metric=config.objective, penalty=config.penalty,
                          strength=config.penalty_strength, anchor=anchor_matrix, batch_size=config.batch_size,
                          seed=seed)
    optimizer = make_optimizer(config.optimizer, space, seed, config.budget, config.sigma0)
    journal = None
    if journal_path is not None:
        journal = Journal(journal_path, fingerprint={"search": config.model_dump(mode="json"), "seed": seed,
                                                     "ingredients": list(weight_space.ingredients),
                                                     "groups": list(weight_space.grouping.labels)})
    try:
        result = run_search(space, optimizer, serial_scorer(objective), config.budget, journal, desc="search")
    finally:
        if journal is not None:
            journal.close()
    return space, result
