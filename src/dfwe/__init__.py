"""dfwe: Derivative Free Weight-space Ensembling.

Train experts on source tasks, fine-tune each (and the pretrained model) on a few-sample target, and
search without gradients the weights that interpolate them into one model::

    from pathlib import Path
    import dfwe

    config = dfwe.load_config(Path("configs/friends.yaml"), {"data.shots": 8})
    results = dfwe.run(config, Path("runs/friends-k8"))
    print(results["methods"]["dfwe"]["test"])
"""

from dfwe.bench import run_bench
from dfwe.config import RunConfig, SearchConfig, TrainConfig, demo_config_path, friends_config_path, load_config
from dfwe.errors import BadInput
from dfwe.eval.evaluate import evaluate_model
from dfwe.merge.apply import merge_checkpoints
from dfwe.merge.space import WeightSpace
from dfwe.pipeline import run
from dfwe.search.standalone import search_checkpoints

__version__ = "0.1.0"

__all__ = [
    "BadInput",
    "RunConfig",
    "SearchConfig",
    "TrainConfig",
    "WeightSpace",
    "demo_config_path",
    "evaluate_model",
    "friends_config_path",
    "load_config",
    "merge_checkpoints",
    "run",
    "run_bench",
    "search_checkpoints",
]
