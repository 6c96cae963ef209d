"""The data stage: tasks loaded and checked, few-sample sets drawn, everything tokenised once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfwe.config import DataConfig, ModelConfig
from dfwe.data.encode import EncodedSet, encode
from dfwe.data.sampling import FewShotSplit, few_shot_split, subsample
from dfwe.data.synthetic import TASKS, generate_suite
from dfwe.data.tasks import Task, load_tasks
from dfwe.errors import BadInput
from dfwe.models import build_tiny_base, load_tokenizer, minilm_path


@dataclass
class PreparedData:
    """Everything the later stages read: the base model folder, tasks, and encoded example sets."""

    base: Path
    tokenizer: object
    target: Task
    sources: dict[str, Task]
    shots: FewShotSplit
    target_train: EncodedSet
    target_dev: EncodedSet
    target_test: EncodedSet
    target_validation: EncodedSet | None
    source_train: dict[str, EncodedSet]
    source_dev: dict[str, EncodedSet]


def resolve_base(model: ModelConfig) -> Path:
    """The pretrained model folder named by ``model.base`` (``minilm`` or a local path)."""
    if model.base == "minilm":
        return minilm_path()
    path = Path(model.base)
    if not (path / "config.json").is_file():
        raise BadInput(f"model.base: {path} is not a local transformers model folder (no config.json); "
                       "use 'minilm' or a folder saved with save_pretrained")
    return path


def load_suite(data: DataConfig, model: ModelConfig, seed: int, work_dir: Path) -> tuple[Path, dict[str, Task]]:
    """The tasks and base model of a run. The built-in suite and its tiny base are generated into ``work_dir``."""
    if data.synthetic is not None:
        unknown = [t for t in [data.target, *data.sources] if t not in TASKS]
        if unknown:
            raise BadInput(f"data: task '{unknown[0]}' is not in the built-in suite ({', '.join(TASKS)})")
        if model.base != "tiny":
            raise BadInput("model.base: the built-in suite has its own vocabulary; use model.base: tiny")
        vocabulary = generate_suite(work_dir / "data", data.synthetic, seed)
        tasks = load_tasks(work_dir / "data", [data.target, *data.sources], data.context_turns)
        unlabelled = [e.text for task in tasks.values() for e in task.splits["train"]]
        tiny = model.tiny
        base = build_tiny_base(work_dir / "base", vocabulary, tiny.hidden_size, tiny.num_layers, tiny.num_heads,
                               tiny.intermediate_size, seed, data.max_length, unlabelled, tiny.pretrain_steps)
        return base, tasks
    if model.base == "tiny":
        raise BadInput("model.base: 'tiny' only works with the built-in suite (data.synthetic)")
    assert data.data_dir is not None
    return resolve_base(model), load_tasks(data.data_dir, [data.target, *data.sources], data.context_turns)


def prepare_data(data: DataConfig, model: ModelConfig, seed: int, work_dir: Path,
                 held_out_split: str = "test", validation: bool = False, source_seed: int | None = None
                 ) -> PreparedData:
    """Load tasks, draw the seed's few-sample sets, and tokenise every set the run will read.

    ``source_seed`` draws the source subsamples (the experts' data); it defaults to ``seed``.

    ``held_out_split`` is the official split scored at the end (``test``, or ``dev`` while developing);
    ``validation`` also encodes the official dev split, to score methods on for choosing options.
    """
    base, tasks = load_suite(data, model, seed, work_dir)
    target = tasks[data.target]
    shots = few_shot_split(target, data.shots, data.resolved_dev_shots, seed)
    tokenizer = load_tokenizer(base, model.trust_remote_code)

    def encoded(task: Task, examples) -> EncodedSet:
        return encode(examples, tokenizer, task.label_index, data.max_length)

    sources = {name: tasks[name] for name in data.sources}
    source_seed = seed if source_seed is None else source_seed
    return PreparedData(
        base=base,
        tokenizer=tokenizer,
        target=target,
        sources=sources,
        shots=shots,
        target_train=encoded(target, shots.train),
        target_dev=encoded(target, shots.dev),
        target_test=encoded(target, target.splits[held_out_split]),
        target_validation=encoded(target, target.splits["dev"]) if validation else None,
        source_train={n: encoded(t, subsample(t.splits["train"], data.source_max_examples, source_seed))
                      for n, t in sources.items()},
        source_dev={n: encoded(t, subsample(t.splits["dev"], data.source_dev_max_examples, source_seed))
                    for n, t in sources.items()},
    )
