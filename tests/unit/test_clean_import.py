"""``import dfwe`` changes no global state: environment, logging, matplotlib's backend, Optuna's verbosity and
the warning filters are as they were. Quieting third-party libraries is the command line's choice, made in
``dfwe.cli.main``; Optuna is quieted only while dfwe drives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# The libraries dfwe imports eagerly are imported first, so that only what dfwe's own modules do is measured (cma
# and nevergrad, which import pyplot, are left out: dfwe imports them only when it uses them). matplotlib's
# backend is read with _get_backend_or_none(): matplotlib.get_backend() would itself resolve (select) one.
PROBE = r"""
import json, logging, os, sys, warnings
import matplotlib, optuna, torch, transformers, scipy, sklearn, pydantic, yaml, safetensors, peft
from huggingface_hub.utils import are_progress_bars_disabled
from transformers.utils import logging as hf_logging

def state():
    return {
        "environ": dict(os.environ),
        "root_logger": [logging.getLogger().level, len(logging.getLogger().handlers)],
        "transformers_logger": [logging.getLogger("transformers").level, hf_logging.get_verbosity()],
        "progress_bars": [hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()],
        "matplotlib": [matplotlib.rcParams._get_backend_or_none(), "matplotlib.pyplot" in sys.modules],
        "optuna": optuna.logging.get_verbosity(),
        "warning_filters": [repr(f) for f in warnings.filters],
    }

before = state()
import dfwe, dfwe.bench, dfwe.report.write, dfwe.search.optimizers
print(json.dumps({"before": before, "after": state()}))
"""

# what dfwe (today models.py) used to set, and what matplotlib would read: unset them so a change is visible
UNSET = ("MPLBACKEND", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY",
         "HF_HUB_DISABLE_PROGRESS_BARS")


def fresh_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in UNSET}


@pytest.fixture(scope="module")
def states() -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=fresh_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_leaves_the_environment_alone(states):
    before, after = states["before"]["environ"], states["after"]["environ"]
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {}


def test_import_leaves_logging_alone(states):
    for key in ("root_logger", "transformers_logger", "progress_bars"):
        assert states["after"][key] == states["before"][key], key


def test_import_selects_no_matplotlib_backend(states):
    assert states["before"]["matplotlib"] == [None, False]  # the probe itself left the backend unresolved
    assert states["after"]["matplotlib"] == [None, False]


def test_import_leaves_optuna_and_warning_filters_alone(states):
    assert states["after"]["optuna"] == states["before"]["optuna"]
    assert states["after"]["warning_filters"] == states["before"]["warning_filters"]


@pytest.mark.parametrize("name", ["optuna-tpe", "optuna-cma"])
def test_optuna_is_quiet_while_searching_and_restored_after(name):
    import logging

    import optuna

    from dfwe.search.optimizers import make_optimizer
    from dfwe.search.spaces import make_space

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    records = Records()
    logging.getLogger("optuna").addHandler(records)
    try:
        space = make_space("simplex", 1, 3)
        optimizer = make_optimizer(name, space, seed=0, budget=4)
        for _ in range(4):
            x = optimizer.ask()
            optimizer.tell(x, float(np.sum(x ** 2)))
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # the caller's level, restored
        assert not [m for m in records.messages if "Trial" in m or "study" in m], records.messages
    finally:
        logging.getLogger("optuna").removeHandler(records)
        optuna.logging.set_verbosity(previous)


CLI_PROBE = """
import json, os
from transformers.utils import logging as hf
from dfwe.cli import main
try:
    main(["--version"])
except SystemExit:
    pass
print(json.dumps({"tokenizers": os.environ.get("TOKENIZERS_PARALLELISM"), "errors_only": hf.get_verbosity() == hf.ERROR,
                  "progress_bars": hf.is_progress_bar_enabled(), "offline": os.environ.get("HF_HUB_OFFLINE")}))
"""


def cli_probe(**env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CLI_PROBE], capture_output=True, text=True, env={**fresh_env(), **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_main_quiets_third_party_itself():
    state = cli_probe()
    assert state["tokenizers"] == "false" and state["errors_only"] and not state["progress_bars"]
    assert cli_probe(TOKENIZERS_PARALLELISM="true")["tokenizers"] == "true"  # a user's own setting wins


def test_cli_main_does_not_go_offline():
    assert cli_probe()["offline"] is None


def test_a_run_pins_torch_threads_only_while_it_runs():
    import torch

    from dfwe.runtime import torch_threads

    before = torch.get_num_threads()
    pinned = 1 if before != 1 else 2
    with torch_threads(pinned):
        assert torch.get_num_threads() == pinned
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(pinned):
        raise RuntimeError("a failing stage")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
