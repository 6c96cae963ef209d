"""Derivative-free optimisers behind one ask/tell interface.

Backends: CMA-ES (pycma), Nevergrad's NGOpt, Optuna (TPE and its CMA-ES sampler), scipy's Nelder-Mead
and seeded random search as a control. Every backend takes the
run's seed, minimises, and may answer ``None`` from :meth:`Optimizer.ask` when it cannot propose more
until outstanding candidates are told (CMA-ES at the end of a generation).

Given the same seed and the same sequence of told values, every backend asks the same points again;
resuming a search replays its journal through a fresh optimiser on exactly this property.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from dfwe.errors import BadInput
from dfwe.search.spaces import SearchSpace

_SIMPLEX_BOX = (-4.0, 4.0)  # where bounded backends look for softmax logits


def _box(space: SearchSpace) -> tuple[float, float]:
    return space.bounds or _SIMPLEX_BOX


class Optimizer:
    """Ask/tell minimiser over ``space``'s coordinates."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int, budget: int, sigma0: float, workers: int = 1):
        self.space, self.seed, self.budget, self.sigma0, self.workers = space, seed, budget, sigma0, workers

    def ask(self) -> np.ndarray | None:
        """The next point to score, or ``None`` if the backend must be told results first."""
        raise NotImplementedError

    def tell(self, x: np.ndarray, value: float) -> None:
        """Report the objective (lower is better) of a point returned by :meth:`ask`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the backend holds (threads); the optimiser is not used afterwards."""


class RandomSearch(Optimizer):
    """Uniform samples: Dirichlet(1) weights on the simplex, uniform in the box otherwise."""

    name = "random"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng([self.seed, 0x4A4D])

    def ask(self) -> np.ndarray:
        if self.space.on_simplex:
            weights = self._rng.dirichlet(np.ones(self.space.ingredients), size=self.space.groups)
            return self.space.to_x(weights)
        lo, hi = _box(self.space)
        return self._rng.uniform(lo, hi, size=self.space.dim)

    def tell(self, x: np.ndarray, value: float) -> None:
        pass


class CMAES(Optimizer):
    """pycma's CMA-ES, one generation at a time; a partial last generation is simply never told."""

    name = "cma"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        import cma

        if self.space.dim < 2:
            raise BadInput("optimizer 'cma' needs at least 2 search dimensions; use 'nelder-mead' or 'random'")
        options: dict[str, Any] = {"seed": self.seed + 1, "verbose": -9}  # pycma reads seed 0 as "random"
        if self.space.bounds is not None:
            options["bounds"] = list(self.space.bounds)
        self._es = cma.CMAEvolutionStrategy(self.space.x0, self.sigma0, options)
        self._pending: list[np.ndarray] = []
        self._told: list[tuple[np.ndarray, float]] = []
        self._generation_size = 0

    def ask(self) -> np.ndarray | None:
        if not self._pending:
            if self._generation_size and len(self._told) < self._generation_size:
                return None  # the generation is out for scoring; wait for it
            self._pending = list(self._es.ask())
            self._generation_size, self._told = len(self._pending), []
        return self._pending.pop(0)

    def tell(self, x: np.ndarray, value: float) -> None:
        self._told.append((np.asarray(x), value))
        if len(self._told) == self._generation_size:
            xs, values = zip(*self._told)
            self._es.tell(list(xs), list(values))


class Nevergrad(Optimizer):
    """A Nevergrad optimiser (NGOpt by default) with a seeded parametrisation."""

    name = "ngopt"
    registry_name = "NGOpt"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        import nevergrad as ng

        parametrization = ng.p.Array(init=self.space.x0)
        if self.space.bounds is not None:
            parametrization.set_bounds(*self.space.bounds)
        parametrization.set_mutation(sigma=self.sigma0)
        parametrization.random_state = np.random.RandomState(self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._opt = ng.optimizers.registry[self.registry_name](
                parametrization=parametrization, budget=self.budget, num_workers=self.workers)
        self._pending: dict[bytes, Any] = {}

    def ask(self) -> np.ndarray:
        candidate = self._opt.ask()
        x = np.asarray(candidate.value, dtype=np.float64)
        self._pending[x.tobytes()] = candidate
        return x

    def tell(self, x: np.ndarray, value: float) -> None:
        self._opt.tell(self._pending.pop(np.asarray(x, dtype=np.float64).tobytes()), value)


class _Stop(Exception):
    """Raised inside scipy's loop to end its thread when the search is over."""


class NelderMead(Optimizer):
    """scipy's Nelder-Mead (``scipy.optimize.minimize``), driven point by point.

    scipy runs its own loop in a daemon thread and blocks inside the objective until the point's value is
    told, so each ask is scipy's next point. The initial simplex spans ``sigma0`` along the axes of a seeded
    random rotation (scipy's default simplex around ``x0 = 0`` is a few 1e-4 wide); when scipy converges
    before the budget is spent, it restarts from the best point with a fresh simplex.
    """

    name = "nelder-mead"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        import queue
        import threading

        self._asks: queue.Queue = queue.Queue(maxsize=1)
        self._tells: queue.Queue = queue.Queue(maxsize=1)
        self._outstanding = False
        self._rng = np.random.default_rng([self.seed, 0x4E4D])
        threading.Thread(target=self._loop, daemon=True, name="dfwe-nelder-mead").start()

    def _simplex(self, center: np.ndarray) -> np.ndarray:
        rotation, _ = np.linalg.qr(self._rng.normal(size=(len(center), len(center))))
        return np.vstack([center, center + self.sigma0 * rotation.T])

    def _loop(self) -> None:
        from scipy.optimize import minimize

        best_x, best_value = self.space.x0, np.inf

        def objective(x: np.ndarray) -> float:
            nonlocal best_x, best_value
            self._asks.put(np.array(x, dtype=np.float64))
            value = self._tells.get()
            if value is None:
                raise _Stop
            if value < best_value:
                best_x, best_value = np.array(x), value
            return value

        try:
            while True:
                minimize(objective, best_x, method="Nelder-Mead",
                         options={"initial_simplex": self._simplex(best_x), "maxfev": 10**9, "xatol": 1e-6,
                                  "fatol": 1e-9})
        except _Stop:
            return

    def ask(self) -> np.ndarray | None:
        if self._outstanding:
            return None  # Nelder-Mead is sequential: one point out at a time
        self._outstanding = True
        return self._asks.get()

    def tell(self, x: np.ndarray, value: float) -> None:
        self._outstanding = False
        self._tells.put(float(value))

    def close(self) -> None:
        """End scipy's thread (it waits for a value that will never come)."""
        try:
            self._tells.put_nowait(None)
        except Exception:  # a value is already queued; the thread ends at its next point
            pass


@contextmanager
def _quiet_optuna() -> Iterator[Any]:
    """Optuna at WARNING (no per-trial INFO lines) for the block only; its previous verbosity comes back after."""
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield optuna
    finally:
        optuna.logging.set_verbosity(previous)


class Optuna(Optimizer):
    """Optuna's ask/tell study with a seeded TPE or CMA-ES sampler over the box."""

    sampler_name = "tpe"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        with _quiet_optuna() as optuna:
            if self.sampler_name == "tpe":
                sampler = optuna.samplers.TPESampler(seed=self.seed,
                                                     n_startup_trials=min(10, max(2, self.budget // 5)))
            else:
                sampler = optuna.samplers.CmaEsSampler(seed=self.seed, sigma0=self.sigma0,
                                                       x0=self._named(self.space.x0), warn_independent_sampling=False)
            self._study = optuna.create_study(direction="minimize", sampler=sampler)
        self._pending: dict[bytes, Any] = {}

    def _named(self, x: np.ndarray) -> dict[str, float]:
        return {f"x{i}": float(v) for i, v in enumerate(x)}

    def ask(self) -> np.ndarray:
        lo, hi = _box(self.space)
        with _quiet_optuna():
            trial = self._study.ask()
            x = np.array([trial.suggest_float(f"x{i}", lo, hi) for i in range(self.space.dim)])
        self._pending[x.tobytes()] = trial
        return x

    def tell(self, x: np.ndarray, value: float) -> None:
        with _quiet_optuna():
            self._study.tell(self._pending.pop(np.asarray(x, dtype=np.float64).tobytes()), value)


class OptunaTPE(Optuna):
    name = "optuna-tpe"
    sampler_name = "tpe"


class OptunaCMA(Optuna):
    name = "optuna-cma"
    sampler_name = "cma"


# Adding an optimiser is one class above and one entry here; the config and the command line take their names from it.
BACKENDS: dict[str, type[Optimizer]] = {cls.name: cls for cls in
                                        (CMAES, Nevergrad, RandomSearch, OptunaTPE, OptunaCMA, NelderMead)}
OPTIMIZERS = tuple(BACKENDS)


def make_optimizer(name: str, space: SearchSpace, seed: int, budget: int, sigma0: float = 0.3,
                   workers: int = 1) -> Optimizer:
    """Build a backend by name (see :data:`OPTIMIZERS`)."""
    if name not in BACKENDS:
        raise BadInput(f"optimizer: unknown optimizer '{name}' (use {', '.join(OPTIMIZERS)})")
    return BACKENDS[name](space, seed, budget, sigma0, workers)
