"""``dfwe mergekit``: run a ``mergekit.yaml`` that dfwe wrote, with mergekit itself.

mergekit reads every model's ``config.json`` through transformers' ``AutoConfig``, which knows dfwe's
model type only once :func:`dfwe.register_auto_classes` has run in the process; this command does that and
calls mergekit's own ``mergekit-yaml``. The recipe's relative paths are resolved against the recipe's
folder (the run folder), or looked up by folder name in ``--ingredients-dir``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from dfwe.errors import BadInput
from dfwe.io import output_folder, read_yaml
from dfwe.modeling import register_auto_classes


def resolve_models(recipe: Path, ingredients_dir: Path | None) -> dict:
    """The recipe with every model path made absolute (and checked to exist)."""
    config = read_yaml(recipe)
    if not isinstance(config, dict) or not isinstance(config.get("models"), list):
        raise BadInput(f"{recipe}: not a mergekit recipe (no 'models' list)")

    def resolve(path: str) -> str:
        candidates = [Path(path)] if Path(path).is_absolute() else [recipe.parent / path]
        if ingredients_dir is not None:
            candidates.insert(0, ingredients_dir / Path(path).name)
        for candidate in candidates:
            if (candidate / "config.json").is_file():
                return str(candidate.resolve())
        raise BadInput(f"{recipe}: model '{path}' not found (looked in {', '.join(map(str, candidates))}); "
                       "pass --ingredients-dir with the folder that holds the ingredients")

    for entry in config["models"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise BadInput(f"{recipe}: every entry of 'models' needs a 'model' path, got {entry!r}")
        entry["model"] = resolve(entry["model"])
    if config.get("base_model"):
        config["base_model"] = resolve(config["base_model"])
    return config


def run_mergekit(recipe: Path, out: Path, ingredients_dir: Path | None = None, overwrite: bool = False) -> None:
    """Merge as ``recipe`` says into ``out`` with mergekit (dfwe's model classes registered).

    An ``out`` that already holds files is refused unless ``overwrite``, and then replaced only once mergekit
    has written the new merge.
    """
    config = resolve_models(recipe, ingredients_dir)
    register_auto_classes()
    from mergekit.scripts.run_yaml import main as mergekit_yaml

    with tempfile.TemporaryDirectory() as tmp, output_folder(out, None, overwrite=overwrite) as folder:
        resolved = Path(tmp) / "mergekit.yaml"
        resolved.write_text(yaml.safe_dump(config, sort_keys=False))
        mergekit_yaml.main([str(resolved), str(folder)], standalone_mode=False)
