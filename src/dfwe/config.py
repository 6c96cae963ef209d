"""The whole run's configuration: every stage's settings, and how the run executes, from YAML.

Each stage declares its own section beside the code that reads it, with the names it accepts taken from that
stage's registry; this module assembles them:

=========  =================================  ============================================================
key        section                            declared in
=========  =================================  ============================================================
data       :class:`DataConfig`                :mod:`dfwe.data.prepare` (``synthetic``: :mod:`dfwe.data.synthetic`)
model      :class:`ModelConfig`               :mod:`dfwe.train.base`
experts    :class:`ExpertsConfig`             :mod:`dfwe.train.experts` (``train``: :class:`TrainConfig`,
                                              :mod:`dfwe.train.loop`)
target     :class:`TargetConfig`              :mod:`dfwe.train.target`
merge      :class:`MergeConfig`               :mod:`dfwe.merge.fold`
search     :class:`SearchConfig`              :mod:`dfwe.search.run`
eval       :class:`EvalConfig`                :mod:`dfwe.eval.scores`
runtime    :class:`RuntimeOptions`            :mod:`dfwe.runtime`
=========  =================================  ============================================================

``runtime`` (device, threads, parallel scorers, batch sizes) is kept apart from the recipe: it enters no
content key and no journal fingerprint, and a run may be resumed under other runtime options. Every artefact
dfwe writes carries the resolved config it came from (``config.yaml`` in the output directory and ``"config"``
in ``results.json``), runtime included, so a result can always be traced to its settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfwe.data.prepare import DataConfig
from dfwe.data.synthetic import SyntheticConfig
from dfwe.errors import BadInput
from dfwe.eval.scores import EvalConfig
from dfwe.io import read_yaml
from dfwe.merge.fold import MergeConfig
from dfwe.runtime import RuntimeOptions
from dfwe.schema import Frozen, Seed, validated
from dfwe.search.run import SearchConfig
from dfwe.train.base import ModelConfig, TinyModelConfig
from dfwe.train.experts import ExpertsConfig
from dfwe.train.loop import TrainConfig
from dfwe.train.target import TargetConfig

_PACKAGED = Path(__file__).parent / "configs"


class RunConfig(Frozen):
    """Everything one run of the whole method needs: the recipe (what the results depend on) and ``runtime``."""

    seed: Seed = 0
    data: DataConfig
    model: ModelConfig = ModelConfig()
    experts: ExpertsConfig = ExpertsConfig()
    target: TargetConfig = TargetConfig()
    merge: MergeConfig = MergeConfig()
    search: SearchConfig = SearchConfig()
    eval: EvalConfig = EvalConfig()
    runtime: RuntimeOptions = RuntimeOptions()


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
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return config_from_dict(raw, origin=str(path))


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted == "a.b"``, creating mappings on the way; a key below a
    value that is not a mapping is bad input."""
    *parents, leaf = dotted.split(".")
    node = raw
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            above = ".".join(parents[: depth + 1])
            raise BadInput(f"--set {dotted}: '{above}' is a value ({node!r}), not a section with keys; "
                           f"set '{above}' itself, or a key of a section")
    node[leaf] = value


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """A JSON/YAML-ready dict of the resolved config (paths as strings)."""
    return config.model_dump(mode="json")


__all__ = ["DataConfig", "EvalConfig", "ExpertsConfig", "MergeConfig", "ModelConfig", "RunConfig", "RuntimeOptions",
           "SearchConfig", "SyntheticConfig", "TargetConfig", "TinyModelConfig", "TrainConfig", "config_from_dict",
           "config_to_dict", "demo_config_path", "feta_config_path", "friends_config_path", "load_config",
           "set_dotted"]
