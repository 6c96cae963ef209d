"""dfwe: Derivative Free Weight-space Ensembling.

Train experts on source tasks, fine-tune each (and the pretrained model) on a few-sample target, and
search without gradients the weights that interpolate them into one model::

    from pathlib import Path
    import dfwe

    config = dfwe.load_config(dfwe.friends_config_path(), {"data.shots": 8})
    results = dfwe.run(config, Path("runs/friends-k8"))
    print(results["methods"]["dfwe"]["test"])

The public names below are imported on first use, so ``import dfwe`` is cheap and changes nothing global.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_PUBLIC = {
    "BadInput": "dfwe.errors",
    "RunConfig": "dfwe.config",
    "RuntimeOptions": "dfwe.runtime",
    "SearchConfig": "dfwe.search.run",
    "TrainConfig": "dfwe.train.loop",
    "demo_config_path": "dfwe.config",
    "feta_config_path": "dfwe.config",
    "friends_config_path": "dfwe.config",
    "load_config": "dfwe.config",
    "WeightSpace": "dfwe.merge.space",
    "evaluate_model": "dfwe.commands.evaluate",
    "merge_checkpoints": "dfwe.commands.merge",
    "register_auto_classes": "dfwe.modeling",
    "run": "dfwe.pipeline",
    "run_bench": "dfwe.bench",
    "run_suite": "dfwe.bench",
    "search_checkpoints": "dfwe.commands.search",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'dfwe' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
