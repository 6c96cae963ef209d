"""The base of every settings model (frozen pydantic, unknown keys refused) and its one-line validation errors.

Each stage declares the settings it reads next to the code that reads them (``TrainConfig`` in
:mod:`dfwe.train.loop`, ``SearchConfig`` in :mod:`dfwe.search.run`, ...), so the values a setting accepts are
derived from the registry of the stage that implements them; :mod:`dfwe.config` assembles the whole run.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dfwe.errors import BadInput


class Frozen(BaseModel):
    """An immutable settings model that refuses keys it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def one_line(error: ValidationError, origin: str) -> str:
    """The first problem of a validation error as ``origin: dotted.key: message (got value)``."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    got = first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    more = f"; {error.error_count() - 1} more problem(s)" if error.error_count() > 1 else ""
    return f"{origin}: {key}: {first['msg']}{shown}{more}"


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], raw: dict[str, Any], origin: str) -> Model:
    """Validate ``raw`` into ``model``; the first problem becomes a one-line :class:`BadInput`."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise BadInput(one_line(error, origin)) from None
