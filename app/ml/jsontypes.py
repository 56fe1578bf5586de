"""Numbers and booleans exactly as JSON Schema types them, for models that read requests.

pydantic's lax mode takes ``true`` for the integer 1, ``"0.5"`` for a number and ``1``
for a boolean, none of which the OpenAPI schema allows; its strict mode refuses
``49.0`` for an integer, which JSON Schema allows (an integer is a number with no
fractional part). These types accept what the schema accepts, and nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictBool, StrictFloat, StrictInt


def _integral(value: Any) -> Any:
    """49.0 is the integer 49 (a boolean or a string stays what it is, and is refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


integral = BeforeValidator(_integral)
JsonInt = Annotated[StrictInt, integral]
JsonFloat = StrictFloat  # an int or a float, never a boolean or a string
JsonBool = StrictBool

# An optional integer takes its bounds inside, before ``integral``:
#     Annotated[StrictInt, Field(ge=1), integral] | None = None
# (``JsonInt | None = Field(None, ge=1)`` validates the same, but its JSON schema would
# carry pydantic's "ge" instead of "minimum", which JSON Schema ignores.)
SEED_MAX = 2**63 - 1
OptionalSeed = Annotated[StrictInt, Field(ge=0, le=SEED_MAX), integral] | None

__all__ = ["SEED_MAX", "JsonBool", "JsonFloat", "JsonInt", "OptionalSeed", "integral"]
