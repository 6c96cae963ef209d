"""The base of every settings model (frozen pydantic, unknown keys refused) and its one-line validation errors.

Each stage declares the settings it reads next to the code that reads them (``TrainConfig`` in
:mod:`dfwe.train.loop`, ``SearchConfig`` in :mod:`dfwe.search.run`, ...), so the values a setting accepts are
derived from the registry of the stage that implements them; :mod:`dfwe.config` assembles the whole run.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dfwe.errors import BadInput

# Every random choice takes the run's seed: NumPy, PyTorch, pycma and Nevergrad (whose RandomState takes
# 32-bit seeds) all accept this range.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Frozen(BaseModel):
    """An immutable settings model that refuses keys it does not declare, and NaN or infinite numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# the names pydantic puts in an error's location for the member of a union it tried ("constrained-int",
# "dict[str,constrained-int]"): not keys a user wrote
_UNION_MEMBER = re.compile(r"^(constrained-)?(int|float|str|bool)$|\[")


def one_line(error: ValidationError, origin: str) -> str:
    """The first problem of a validation error as ``origin: dotted.key: message (got value)``."""
    def keys(problem: dict) -> list[str]:
        return [str(part) for part in problem["loc"] if not _UNION_MEMBER.search(str(part))]

    # of a union's members, the one that read deepest into the value is the one the user meant
    first = max(error.errors(), key=lambda problem: len(keys(problem)))
    key = ".".join(keys(first)) or "(top level)"
    got = first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    more = f"; {error.error_count() - 1} more problem(s)" if error.error_count() > 1 else ""
    message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own words
    return f"{origin}: {key}: {message}{shown}{more}"


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], raw: dict[str, Any], origin: str) -> Model:
    """Validate ``raw`` into ``model``; the first problem becomes a one-line :class:`BadInput`."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise BadInput(one_line(error, origin)) from None


def checked(annotation: Any, value: Any, origin: str) -> Any:
    """``value`` validated against a bounded type (``Seed``, ``MaxLength``, ...) as the config would validate it;
    outside its bounds is a one-line :class:`BadInput` naming ``origin`` (a flag, a key)."""
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as error:
        first = error.errors()[0]
        raise BadInput(f"{origin}: {first['msg']} (got {value!r})") from None
