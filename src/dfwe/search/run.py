"""The search loop: ask a batch, score it, journal it, tell it; exactly ``budget`` candidates.

Candidates are asked in batches of ``config.batch`` and told back in ask order, whoever scored them, so
a serial run and a parallel (Ray) run with the same seed produce the same journal. On resume the journal
is replayed through a fresh optimiser: each asked point must match its journalled one, its journalled
score is told, and nothing journalled is scored again.

With successive halving every candidate of a batch is first scored on a fixed slice of the dev data, and
only the best ``1/eta`` of the batch are scored on all of it. The optimiser is told the slice scores (one
consistent scale); the winner is the best *full* score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from dfwe.data.shapes import Metric
from dfwe.errors import BadInput
from dfwe.merge.fold import DevFold, FoldSpec
from dfwe.merge.groups import GRANULARITIES
from dfwe.progress import progress_bar
from dfwe.runtime import RuntimeOptions
from dfwe.schema import Frozen
from dfwe.search.journal import Journal, Record
from dfwe.search.objective import PENALTIES, Objective, Score
from dfwe.search.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from dfwe.search.spaces import SPACES, SearchSpace, make_space


class SearchConfig(Frozen):
    """The derivative-free search over interpolation weights."""

    optimizer: Literal[OPTIMIZERS] = "cma"  # type: ignore[valid-type]
    # candidates the optimiser's search scores, its start point included; a run then also scores the uniform and
    # greedy soups as two more and keeps the best point of all on the dev objective
    budget: int = Field(60, ge=1)
    space: Literal[SPACES] = "simplex"  # type: ignore[valid-type]
    granularity: Literal[GRANULARITIES] = "model"  # type: ignore[valid-type]
    block_size: int = Field(2, ge=1)
    objective: Metric = "loss"
    # Optional weighted combination, e.g. {loss: 1.0, weighted_f1: 0.5}: sum of weight x (loss, or -metric).
    objective_weights: dict[Metric, float] | None = None
    # The objective is scored on dev only. Anything else is refused: test data never steers a choice.
    objective_split: Literal["dev"] = "dev"
    # Where the search starts: uniform weights, the best single ingredient, or the greedy soup (all chosen on
    # dev), mixed with uniform by init_smoothing so every ingredient stays reachable.
    init: Literal["uniform", "best", "greedy"] = "uniform"
    init_smoothing: float = Field(0.1, ge=0, le=1)
    # With a per-group granularity: first spend this many evaluations on one weight per ingredient, then
    # search per group starting from (and, with penalty "anchor", pulled towards) that solution.
    coarse_budget: int = Field(0, ge=0)
    # Cross-fitting: every ingredient is also fine-tuned on the dev set and scored on the train set, and the
    # objective pools both folds (twice the scored examples; weights must work for both fine-tunes).
    crossfit: bool = False
    penalty: Literal[PENALTIES] = "none"  # type: ignore[valid-type]
    penalty_strength: float = Field(0.0, ge=0)
    sigma0: float = Field(0.3, gt=0)
    # Candidates asked and scored together (journal order depends on it; runtime.workers do not).
    batch: int = Field(1, ge=1)
    halving: bool = False
    halving_fraction: float = Field(0.34, gt=0, lt=1)
    halving_eta: int = Field(3, ge=2)

    @field_validator("objective_split", mode="before")
    @classmethod
    def _dev_only(cls, value: Any) -> Any:
        if value != "dev":
            raise ValueError(f"'{value}' is not allowed: the search objective uses dev data only")
        return value

    @model_validator(mode="after")
    def _halving_needs_batches(self) -> "SearchConfig":
        if self.halving and self.batch < self.halving_eta:
            raise ValueError(f"halving promotes the best 1/{self.halving_eta} of each batch: set batch >= "
                             f"{self.halving_eta} (got {self.batch})")
        return self

    @model_validator(mode="after")
    def _coarse_fits_budget(self) -> "SearchConfig":
        if self.coarse_budget and self.coarse_budget >= self.budget:
            raise ValueError(f"coarse_budget ({self.coarse_budget}) must be below budget ({self.budget}): raise "
                             "search.budget or lower search.coarse_budget (0: no coarse stage)")
        return self


# Scores weight matrices at one fidelity; returns one (Score, worker name) per candidate, in order.
BatchScorer = Callable[[Sequence[np.ndarray], float], list[tuple[Score, str]]]


@dataclass(frozen=True)
class Halving:
    """Successive halving: score on ``fraction`` of dev first, promote the best ``1/eta`` of each batch."""

    fraction: float
    eta: int


@dataclass(frozen=True)
class SearchResult:
    """Every journalled evaluation; the winner is the best full-fidelity one (earliest on ties)."""

    records: tuple[Record, ...]
    optimizer: str
    seed: int
    candidates: int
    references: Mapping[int, str] = field(default_factory=dict)  # record index -> name of a reference point

    @property
    def kept(self) -> str:
        """What the winner is: ``search`` (a candidate of the optimiser or the start) or a reference's name."""
        return self.references.get(self.best.idx, "search")

    @property
    def full(self) -> list[Record]:
        return [r for r in self.records if r.fidelity >= 1.0]

    @property
    def best(self) -> Record:
        return min(self.full, key=lambda r: (r.objective, r.idx))

    @property
    def best_so_far(self) -> list[float]:
        return np.minimum.accumulate([r.objective for r in self.full]).tolist()

    @property
    def full_evaluations_saved(self) -> int:
        return self.candidates - len(self.full)


def serial_scorer(objective: Objective) -> BatchScorer:
    """Score a batch one candidate after another in this process."""
    return lambda batch, fidelity: [(objective(weights, fidelity), "local") for weights in batch]


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


class _Evaluations:
    """Scores (x, fidelity) pairs in journal order, reusing journalled ones and journalling new ones."""

    def __init__(self, space: SearchSpace, score_batch: BatchScorer, journal: Journal | None):
        self.space, self.score_batch, self.journal = space, score_batch, journal
        self.journalled = journal.records() if journal is not None else []
        self.records: list[Record] = []

    def __call__(self, xs: list[np.ndarray], fidelity: float, weights: list[np.ndarray] | None = None,
                 score_batch: BatchScorer | None = None) -> list[Record]:
        """Records of the points ``xs``; ``weights``, when given, are the points' exact weights (a softmax cannot
        reach a weight of exactly 0, which a reference soup has); ``score_batch``, when given, scores them instead
        of the search's scorer."""
        out: list[Record] = []
        for x in xs:
            idx = len(self.records) + len(out)
            if idx >= len(self.journalled):
                break
            old = self.journalled[idx]
            if old.fidelity != fidelity or not np.allclose(old.x, x, rtol=1e-9, atol=1e-12):
                raise BadInput(f"journal entry {idx} differs from what the optimiser asks on replay; the journal "
                               "belongs to another search (use another --out, or the same settings and seed)")
            out.append(old)
        fresh = xs[len(out):]
        if fresh:
            exact = [self.space.to_weights(x) for x in fresh] if weights is None else weights[len(out):]
            for x, w, (score, worker) in zip(fresh, exact, (score_batch or self.score_batch)(exact, fidelity)):
                record = Record(idx=len(self.records) + len(out), x=x, weights=w,
                                objective=score.value, metrics=score.metrics, fidelity=fidelity,
                                seconds=score.seconds, worker=worker)
                if self.journal is not None:
                    self.journal.append(record)
                out.append(record)
        self.records.extend(out)
        return out


def run_search(space: SearchSpace, optimizer: Optimizer, score_batch: BatchScorer, budget: int,
               journal: Journal | None = None, batch: int = 1, halving: Halving | None = None,
               desc: str = "search", references: Mapping[str, np.ndarray] | None = None,
               score_references: BatchScorer | None = None) -> SearchResult:
    """Score exactly ``budget`` candidates (replaying whatever the journal already holds), then the
    ``references`` (name -> weights ``[groups, ingredients]``) in full, by ``score_references`` when given (a space
    whose own merge is not the soups' linear one).

    The first candidate is always the space's start point, scored in full, so the search never ends worse
    on dev than where it started (it is not told to the optimiser, which proposes the rest). The references
    are the points the result will be compared with (a run's uniform and greedy soups): scored last and not
    told to the optimiser, so the optimiser's path is the same with or without them, and the winner, the best
    full-fidelity candidate (earliest on ties), is never worse on dev than any of them.
    """
    if budget < 1:
        raise BadInput(f"budget: must be at least 1 (got {budget})")
    references = dict(references or {})
    evaluate = _Evaluations(space, score_batch, journal)
    evaluate([space.x0], 1.0)
    candidates = 1
    bar = progress_bar(budget + len(references), desc)
    bar.update(1)
    while candidates < budget:
        asked = _ask_batch(optimizer, min(batch, budget - candidates))
        if halving is None:
            told = evaluate(asked, 1.0)
        else:
            told = evaluate(asked, halving.fraction)
            ranked = sorted(range(len(asked)), key=lambda i: (told[i].objective, i))
            promoted = sorted(ranked[: math.ceil(len(asked) / halving.eta)])
            evaluate([asked[i] for i in promoted], 1.0)
        for x, record in zip(asked, told):
            optimizer.tell(x, record.objective)
        candidates += len(asked)
        bar.update(len(asked))
        full = [r.objective for r in evaluate.records if r.fidelity >= 1.0]
        bar.set_postfix(best=f"{min(full):.4f}")
    scored = evaluate([space.to_x(weights) for weights in references.values()], 1.0, list(references.values()),
                      score_references)
    bar.update(len(scored))
    bar.close()
    if journal is not None and len(evaluate.journalled) > len(evaluate.records):
        raise BadInput(f"{journal.path}: holds {len(evaluate.journalled)} evaluations, more than this search makes "
                       f"({len(evaluate.records)}); the journal belongs to another search")
    return SearchResult(records=tuple(evaluate.records), optimizer=optimizer.name, seed=optimizer.seed,
                        candidates=candidates + len(scored),
                        references={record.idx: name for record, name in zip(scored, references)})


def search_weights(folds: Sequence[DevFold], config: SearchConfig, seed: int, journal_path: Path | None = None,
                   init: np.ndarray | None = None, anchor: np.ndarray | None = None,
                   specs: Sequence[FoldSpec] | None = None, runtime: RuntimeOptions = RuntimeOptions(),
                   references: Mapping[str, np.ndarray] | None = None) -> tuple[SearchSpace, SearchResult]:
    """Search merge weights for the folds' shared weight space on dev data, as ``config`` says.

    The space's grouping is set from ``config``; ``init`` (``[ingredients]``) is the start point and
    ``anchor`` the target of the ``anchor`` penalty; ``references`` (name -> ``[ingredients]`` weights) are
    scored after the budget (see :func:`run_search`). With ``runtime.workers > 1`` candidates are scored by
    Ray workers built from ``specs``. Returns the search space and every journalled evaluation.
    """
    weight_space = folds[0].space
    for fold in folds:
        fold.space.set_grouping(config.granularity, config.block_size)
    space = make_space(config.space, weight_space.grouping.size, weight_space.num_ingredients, init)
    # the anchor penalty pulls towards the start point unless told otherwise (a coarse first stage has no other)
    anchor_matrix = np.broadcast_to(space.init if anchor is None else anchor, (space.groups, space.ingredients)).copy()
    objective_kwargs = dict(method=space.method, metric=config.objective, mix=config.objective_weights,
                            penalty=config.penalty, strength=config.penalty_strength, anchor=anchor_matrix,
                            batch_size=runtime.search_batch_size, seed=seed)
    objective = Objective(folds, **objective_kwargs)
    optimizer = make_optimizer(config.optimizer, space, seed, config.budget, config.sigma0, workers=config.batch)
    halving = Halving(config.halving_fraction, config.halving_eta) if config.halving else None
    scorer: BatchScorer = serial_scorer(objective)
    # the references are soups, linear merges: a space whose own merge would weigh their weights otherwise (fisher)
    # scores them as linear merges, in this process
    score_references = (None if space.soup_method == space.method else
                        serial_scorer(Objective(folds, **{**objective_kwargs, "method": space.soup_method})))
    if runtime.workers > 1:
        if specs is None:
            raise ValueError("parallel search needs fold specs to build its workers")
        from dfwe.search.parallel import RayScorer

        gpus = 1.0 / runtime.workers if weight_space.live.device.type == "cuda" else 0.0
        scorer = RayScorer(specs, config.granularity, config.block_size, objective_kwargs, runtime.workers,
                           runtime.ray_address, gpus)
    journal = None
    if journal_path is not None:
        journal = Journal(journal_path, fingerprint={"search": config.model_dump(mode="json"), "seed": seed,
                                                     "ingredients": [_as_journalled(path, journal_path.parent)
                                                                     for path in weight_space.ingredients],
                                                     "groups": list(weight_space.grouping.labels),
                                                     "init": space.init.tolist()})
    try:
        shape = (space.groups, space.ingredients)
        points = {name: np.broadcast_to(np.asarray(weights, dtype=np.float64), shape).copy()
                  for name, weights in (references or {}).items()}
        result = run_search(space, optimizer, scorer, config.budget, journal, batch=config.batch, halving=halving,
                            references=points, score_references=score_references)
    finally:
        if journal is not None:
            journal.close()
        optimizer.close()
        if hasattr(scorer, "close"):
            scorer.close()
    return space, result


def _as_journalled(path: str, folder: Path) -> str:
    """An ingredient's path as a journal records it: relative to the journal's folder when inside it (a run's own
    cache), so that a run built beside earlier results and then moved into their place still resumes."""
    resolved, anchor = Path(path).resolve(), folder.resolve()
    return str(resolved.relative_to(anchor)) if resolved.is_relative_to(anchor) else path


@dataclass(frozen=True)
class SearchOutcome:
    """The search stage's result: the final stage's space and evaluations, the parameter groups its weights are
    over, and the coarse stage's evaluations if any."""

    space: SearchSpace
    result: SearchResult
    groups: tuple[str, ...]
    coarse: SearchResult | None = None

    @property
    def weights(self) -> np.ndarray:
        return np.atleast_2d(self.result.best.weights)

    @property
    def method(self) -> str:
        """The merge method of the point kept: the space's for a point of the search, a soup's for a soup."""
        return self.space.method if self.result.kept == "search" else self.space.soup_method

    @property
    def trace(self) -> list[float]:
        return [r.objective for r in (self.coarse.full if self.coarse else [])] + [r.objective for r in self.result.full]

    def summary(self, objective: str) -> dict:
        """The ``search`` block of ``results.json``."""
        stages = [s for s in (self.coarse, self.result) if s is not None]
        return {"evaluations": sum(s.candidates for s in stages),
                "coarse_evaluations": self.coarse.candidates if self.coarse else 0,
                "full_evaluations": sum(len(s.full) for s in stages),
                "full_evaluations_saved": sum(s.full_evaluations_saved for s in stages),
                "best_objective": self.result.best.objective, "best_weights": self.weights.tolist(),
                "kept": self.result.kept,
                "optimizer": self.result.optimizer, "seed": self.result.seed, "objective": objective,
                "trace": self.trace, "best_so_far": np.minimum.accumulate(self.trace).tolist()}


def search_stage(folds: Sequence[DevFold], config: SearchConfig, seed: int, out_dir: Path, start: np.ndarray,
                 specs: Sequence[FoldSpec] | None = None, runtime: RuntimeOptions = RuntimeOptions(),
                 references: Mapping[str, np.ndarray] | None = None) -> SearchOutcome:
    """The whole search: with a per-group granularity and ``coarse_budget``, first one weight per ingredient
    (journal ``journal-coarse.sqlite``), then per group from that solution, which the ``anchor`` penalty pulls
    towards: per-group weights shrunk towards the global ones. The final stage also scores the ``references``
    (name -> ``[ingredients]`` weights, the soups dfwe is compared with) and keeps the best point of all."""
    coarse = None
    if config.coarse_budget and config.granularity != "model":
        coarse_config = config.model_copy(update={"granularity": "model", "budget": config.coarse_budget,
                                                  "coarse_budget": 0})
        _, coarse = search_weights(folds, coarse_config, seed, out_dir / "journal-coarse.sqlite", init=start,
                                   specs=specs, runtime=runtime)
        start = coarse.best.weights[0]
    fine_config = config.model_copy(update={"budget": config.budget - (config.coarse_budget if coarse else 0),
                                            "coarse_budget": 0})
    space, result = search_weights(folds, fine_config, seed, out_dir / "journal.sqlite", init=start, anchor=start,
                                   specs=specs, runtime=runtime, references=references)
    return SearchOutcome(space, result, folds[0].space.grouping.labels, coarse)
