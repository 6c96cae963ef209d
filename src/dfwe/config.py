"""Run configuration: frozen pydantic models, YAML in and out.

Every artefact dfwe writes carries the resolved config it came from (``config.yaml`` in the output
directory and ``"config"`` in ``results.json``), so a result can always be traced to its settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dfwe.errors import BadInput

Metric = Literal["loss", "calibrated_loss", "accuracy", "weighted_f1", "macro_f1"]
OptimizerName = Literal["cma", "ngopt", "random", "optuna-tpe", "optuna-cma", "nelder-mead"]
SpaceName = Literal["simplex", "affine", "box", "task_arithmetic"]
Granularity = Literal["model", "layer", "block", "kind"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainConfig(_Frozen):
    """One fine-tuning recipe; experts and target fine-tunes each get one."""

    lr: float = Field(5e-5, gt=0)
    # Full fine-tuning epochs after the optional linear probe (0 with linear_probe: the probe alone).
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(16, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    # "best" keeps the epoch with the best dev score (dev only, never test); "last" keeps the final one.
    select: Literal["best", "last"] = "best"
    select_metric: Metric = "loss"
    patience: int | None = Field(None, ge=1)
    # LP-FT: first fit the classification head alone on frozen features (L2-regularised logistic regression,
    # full batch), then fine-tune everything. Few-sample fine-tuning from a random head distorts the
    # expert's features; a fitted head leaves far less to change.
    linear_probe: bool = False
    probe_c: float = Field(1.0, gt=0)  # inverse L2 strength, as scikit-learn's C
    # Train the body only: the head stays where it started (a probe shared by every ingredient keeps one
    # meaning across them, so their heads stay averageable).
    freeze_head: bool = False

    @model_validator(mode="after")
    def _something_to_train(self) -> "TrainConfig":
        if self.epochs == 0 and not self.linear_probe:
            raise ValueError("epochs: 0 trains nothing; set epochs >= 1 or linear_probe: true")
        return self


class SyntheticConfig(_Frozen):
    """The built-in offline task suite (see :mod:`dfwe.data.synthetic`)."""

    train_size: int = Field(1500, ge=50)
    dev_size: int = Field(300, ge=20)
    test_size: int = Field(600, ge=20)
    vocab_per_label: int = Field(12, ge=2)
    filler_words: int = Field(80, ge=5)


class DataConfig(_Frozen):
    """Which tasks, how many shots, how text becomes tokens."""

    data_dir: Path | None = None
    synthetic: SyntheticConfig | None = None
    target: str
    sources: list[str] = Field(min_length=1)
    # How the few-sample target sets are drawn: k examples per class (train and dev both from the train
    # split), or FETA's protocol: a seeded fraction of the train and of the dev *dialogues* of every task
    # (target and sources alike; test is always the full split).
    sampling: Literal["per_class", "dialogues"] = "per_class"
    shots: int = Field(32, ge=1)
    dev_shots: int | None = Field(None, ge=1)
    # dialogues: the fraction kept, one for all tasks or per task ({default: 0.1, question_answering: 0.5})
    fraction: float | dict[str, float] = 0.1
    # tokens per input: one value for all tasks, or per task ({default: 128, question_answering: 256})
    max_length: int | dict[str, int] = 128
    context_turns: int = Field(3, ge=0)
    stride: int = Field(64, ge=1)  # span tasks: tokens shared by consecutive windows of a long context
    source_max_examples: int | None = Field(None, ge=1)
    source_dev_max_examples: int = Field(500, ge=1)

    @field_validator("fraction")
    @classmethod
    def _fractions(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        for fraction in ([value] if isinstance(value, float | int) else value.values()):
            if not 0 < fraction <= 1:
                raise ValueError(f"a fraction of dialogues must be in (0, 1], got {fraction}")
        return value

    @field_validator("max_length")
    @classmethod
    def _lengths(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        for length in ([value] if isinstance(value, int) else value.values()):
            if length < 8:
                raise ValueError(f"max_length must be at least 8 tokens, got {length}")
        return value

    def max_length_of(self, task: str) -> int:
        """Tokens per input of ``task``."""
        if isinstance(self.max_length, dict):
            return int(self.max_length.get(task, self.max_length.get("default", 128)))
        return int(self.max_length)

    def fraction_of(self, task: str) -> float:
        """The fraction of dialogues kept of ``task`` (``dialogues`` sampling)."""
        if isinstance(self.fraction, dict):
            return float(self.fraction.get(task, self.fraction.get("default", 0.1)))
        return float(self.fraction)

    @model_validator(mode="after")
    def _one_source_of_tasks(self) -> "DataConfig":
        if (self.data_dir is None) == (self.synthetic is None):
            raise ValueError("give exactly one of data.data_dir (task folders) or data.synthetic (the built-in suite)")
        if self.target in self.sources:
            raise ValueError(f"target '{self.target}' is also listed as a source")
        return self

    @property
    def resolved_dev_shots(self) -> int:
        return self.dev_shots if self.dev_shots is not None else self.shots


class TinyModelConfig(_Frozen):
    """A small BERT built in code, for the demo and tests."""

    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(128, ge=8)
    # masked-LM steps on the suite's unlabelled train text, so the base is a pretrained model (0: random init)
    pretrain_steps: int = Field(600, ge=0)


class ModelConfig(_Frozen):
    """The pretrained encoder: ``minilm`` (all-MiniLM-L6-v2 from PyPI), ``tiny``, or a local folder."""

    base: str = "minilm"
    tiny: TinyModelConfig = TinyModelConfig()
    trust_remote_code: bool = False
    # How a sequence becomes one vector: "auto" reads the base's sentence-transformers pooling config (mean
    # for all-MiniLM-L6-v2) and otherwise keeps a BERT-style pretrained pooler.
    pooling: Literal["auto", "mean", "cls", "max", "pooler"] = "auto"


class ExpertsConfig(_Frozen):
    """Source experts: one per source task, plus one multitask expert over all of them."""

    train: TrainConfig = TrainConfig(lr=5e-5, epochs=2, batch_size=32)
    multitask: bool = True
    # Multitask batches come from one task at a time, tasks drawn with probability ~ size ** (1 / temperature).
    temperature: float = Field(1.0, gt=0)
    # Optimizer steps per multitask epoch (default: as many as one pass over every source's rows takes).
    multitask_steps: int | None = Field(None, ge=1)
    # Where single-task experts start: the base, or the multitask expert (model ratatouille).
    start: Literal["base", "multitask"] = "base"
    # Seed of the experts and of their source subsamples; None: the run's seed. Fixing it lets runs at
    # several seeds share one set of experts (the expensive stage), varying only the few-sample target.
    seed: int | None = Field(None, ge=0)

    def resolved_seed(self, run_seed: int) -> int:
        return run_seed if self.seed is None else self.seed


class TargetConfig(_Frozen):
    """The few-sample fine-tune every ingredient gets (see :mod:`dfwe.train.target`)."""

    train: TrainConfig = TrainConfig(lr=5e-5, epochs=15, batch_size=16)
    # Overrides of `train`, one recipe each: every ingredient (and so every single-model baseline) tries all
    # and keeps the one whose kept epoch is best on dev by train.select_metric. None: `train` alone.
    grid: list[dict[str, Any]] | None = None
    # "shared": one probe fitted on the pretrained model's features starts every ingredient;
    # "own": each ingredient fits its own probe (with train.linear_probe), so heads differ between them.
    head: Literal["shared", "own"] = "own"
    include_base: bool = True

    @field_validator("grid")
    @classmethod
    def _grid_recipes(cls, grid: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for entry in grid or []:
            unknown = sorted(set(entry) - set(TrainConfig.model_fields))
            if unknown:
                raise ValueError(f"grid entry {entry}: '{unknown[0]}' is not a training setting")
        return grid

    @model_validator(mode="after")
    def _grid_entries_valid(self) -> "TargetConfig":
        for index, entry in enumerate(self.grid or []):
            try:
                TrainConfig.model_validate({**self.train.model_dump(), **entry})
            except ValidationError as error:
                first = error.errors()[0]
                raise ValueError(f"grid entry {index} ({entry}): {'.'.join(map(str, first['loc']))}: "
                                 f"{first['msg']}") from None
        return self


class MergeConfig(_Frozen):
    """How a merged model (the soups, dfwe) gets its head.

    "average": the head is merged with the body, like every other tensor; "refit": for every candidate the
    head is fitted afresh (a probe, inverse L2 strength probe_c) on the merged body's features of the
    few-sample *train* set, so the search weighs bodies only and no dev data reaches the head.
    """

    head: Literal["average", "refit"] = "average"
    probe_c: float = Field(1.0, gt=0)
    # refit: fit on at most this many train examples (a seeded subset), to bound its cost on long inputs
    refit_examples: int | None = Field(None, ge=1)


class SearchConfig(_Frozen):
    """The derivative-free search over interpolation weights."""

    optimizer: OptimizerName = "cma"
    budget: int = Field(60, ge=1)
    space: SpaceName = "simplex"
    granularity: Granularity = "model"
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
    penalty: Literal["none", "l1", "uniform", "anchor"] = "none"
    penalty_strength: float = Field(0.0, ge=0)
    sigma0: float = Field(0.3, gt=0)
    batch_size: int = Field(64, ge=1)
    # Candidates asked and scored together (journal order depends on it; workers do not).
    batch: int = Field(1, ge=1)
    workers: int = Field(1, ge=1)
    ray_address: str | None = None
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

    def journal_fingerprint(self) -> dict[str, Any]:
        """The settings that determine which candidates are asked and how they score (not who scores them)."""
        return self.model_dump(mode="json", exclude={"workers", "ray_address", "batch_size"})


class EvalConfig(_Frozen):
    """Scoring: which official split is held out for the final scores, batch size, bootstrap resamples.

    ``split: dev`` scores on the official dev split instead of test: use it while developing a method, so
    that test data never steers a choice (the few-sample dev set is drawn from train, so both are disjoint).
    """

    split: Literal["test", "dev"] = "test"
    # Also score every method on the official dev split (reported as "validation"), so that method options
    # can be compared and chosen without looking at test scores.
    validation: bool = False
    batch_size: int = Field(64, ge=1)
    bootstrap: int = Field(1000, ge=0)
    # Dev loss barriers between every pair of ingredients (midpoint minus mean of the ends).
    barriers: bool = True


class RunConfig(_Frozen):
    """Everything one run of the whole method needs."""

    seed: int = 0
    device: str = "auto"
    # CPU threads PyTorch uses during the run (None: its default, one per core). Float results depend on the
    # count, so pinning it lets a run be reproduced bit for bit on a machine with another number of cores.
    threads: int | None = Field(None, ge=1)
    data: DataConfig
    model: ModelConfig = ModelConfig()
    experts: ExpertsConfig = ExpertsConfig()
    target: TargetConfig = TargetConfig()
    merge: MergeConfig = MergeConfig()
    search: SearchConfig = SearchConfig()
    eval: EvalConfig = EvalConfig()


def _one_line(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    got = first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    more = f"; {error.error_count() - 1} more problem(s)" if error.error_count() > 1 else ""
    return f"{origin}: {key}: {first['msg']}{shown}{more}"


Model = TypeVar("Model", bound=BaseModel)
_PACKAGED = Path(__file__).parent / "configs"


def validated(model: type[Model], raw: dict[str, Any], origin: str) -> Model:
    """Validate ``raw`` into ``model``; the first problem becomes a one-line :class:`BadInput`."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise BadInput(_one_line(error, origin)) from None


def config_from_dict(raw: dict[str, Any], origin: str = "config") -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig`; bad values raise :class:`BadInput`."""
    return validated(RunConfig, raw, origin)


def demo_config_path() -> Path:
    """The built-in demo's config (also at ``configs/demo.yaml`` in the repository)."""
    return _PACKAGED / "demo.yaml"


def feta_config_path() -> Path:
    """The FETA-Friends suite's default config (also at ``configs/feta_friends.yaml``)."""
    return _PACKAGED / "feta_friends.yaml"


def friends_config_path() -> Path:
    """The real benchmark's default config (also at ``configs/friends.yaml``)."""
    return _PACKAGED / "friends.yaml"


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config, apply dotted-key overrides (``{"data.shots": 8}``) and validate it."""
    if not path.is_file():
        raise BadInput(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise BadInput(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return config_from_dict(raw, origin=str(path))


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted == "a.b"``, creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """A JSON/YAML-ready dict of the resolved config (paths as strings)."""
    return config.model_dump(mode="json")


def dump_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
