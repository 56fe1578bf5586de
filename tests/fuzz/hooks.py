"""schemathesis hooks for fuzzing charnn (loaded through ``tests/fuzz/schemathesis.toml``).

A few rules cannot be stated in JSON Schema, because they relate values to each other
or to stored models: a pair's input and target have the same length, a text model's
vocabulary reads what it writes, data and inputs use only their vocabulary's characters,
a training job's total cost and total characters stay under their limits, generation
needs a model trained on text, an imported checkpoint's files are a checkpoint. charnn
refuses a request that breaks one with a 422 whose ``type`` names the rule.

The configuration lets ``positive_data_acceptance`` take a 422 from the seven operations
that have such rules, and only those; ``semantic_refusals_only`` then fails any of those
422s (to a schema-valid request) that refuses anything else. So a 422 for a reason
the schema could have stated, e.g. a pydantic error, still fails the run. (One more
refusal passes: an integer just past a bound near 2**63, which schemathesis compares as
float64 and so takes for valid; see ``past_a_float64_bound``.)
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

# operation -> the kinds of refusal the schema cannot state ("limit_exceeded:<setting>" for
# a limit, "message" for a 422 whose detail is a message rather than a list of field errors)
SEMANTIC_REFUSALS: dict[str, frozenset[str]] = {
    "POST /train": frozenset(
        {
            "invalid_data",  # misaligned pairs; a text vocabulary whose input is not its output
            "unknown_character",  # data outside the vocabulary given with it
            "limit_exceeded:CHARNN_MAX_TRAINING_COST",  # parameters x characters x epochs
            "limit_exceeded:CHARNN_MAX_TRAINING_CHARS",  # summed over every pair
            "limit_exceeded:CHARNN_MAX_TRAINING_LABELS",  # distinct labels of labeled pairs
            # a dataset id that names no upload; too few examples for validation_fraction to
            # hold any out, when early stopping or the plateau schedule judge by them
            "invalid_request",
        }
    ),
    "POST /datasets": frozenset(
        {
            "invalid_data",  # not UTF-8; a row that is not input,target (or input,label)
            "invalid_request",  # kind text read as csv, tsv or jsonl: two query parameters
        }
    ),
    "POST /predict": frozenset(
        {
            "unknown_character",  # the model's vocabulary
            "invalid_data",  # an empty input to a classifier, which labels sequences
            "limit_exceeded:CHARNN_MAX_PREDICT_VALUES",  # characters x (top_k + probabilities)
            "limit_exceeded:CHARNN_MAX_INFERENCE_COST",  # characters x the model's parameters
        }
    ),
    "POST /generate": frozenset(
        {
            "unknown_character",
            "message",  # trained on pairs
            "limit_exceeded:CHARNN_MAX_INFERENCE_COST",  # (prompt + length) x parameters
        }
    ),
    "POST /models/{name}/versions/{version}/evaluate": frozenset(
        {
            "unknown_character",  # the model's vocabulary
            "invalid_data",  # misaligned pairs
            "invalid_request",  # data of the other task (pairs for a text model)
            "limit_exceeded:CHARNN_MAX_EVALUATE_CHARACTERS",  # pairs counted padded
        }
    ),
    "GET /jobs": frozenset({"invalid_request"}),  # history=true with a limit over 10
    "POST /models/{name}/versions": frozenset({"invalid_request"}),  # the files' contents
}
SETTING = re.compile(r"\(limit set by (CHARNN_[A-Z_]+)\)")


def past_a_float64_bound(error: dict[str, Any]) -> bool:
    """An integer refused by a bound that float64 cannot tell it from.

    schemathesis validates large integers in floating point, so it takes 2**63 for a
    seed whose maximum is 2**63 - 1 (both are 9.223372036854776e18 as doubles) for a
    valid one. The schema states that bound exactly; the server honours it exactly.
    """
    bounds = error.get("ctx") or {}
    value, bound = error.get("input"), bounds.get("le", bounds.get("ge"))
    return (
        error.get("type") in ("less_than_equal", "greater_than_equal")
        and isinstance(value, int)
        and isinstance(bound, int)
        and value != bound
        and float(value) == float(bound)
    )


def refusal_kinds(detail: Any) -> set[str]:
    if isinstance(detail, str):
        return {"message"}
    kinds = set()
    for error in detail:
        if past_a_float64_bound(error):
            continue  # not a refusal the schema could state better: it states it already
        kind = str(error.get("type"))
        if kind == "limit_exceeded" and (found := SETTING.search(str(error.get("msg")))):
            kind += ":" + found.group(1)
        kinds.add(kind)
    return kinds


@schemathesis.check
def semantic_refusals_only(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 422 to a schema-valid request refuses only a rule the schema cannot state."""
    meta = case.meta
    if response.status_code != 422 or meta is None or not meta.generation.mode.is_positive:
        return None
    allowed = SEMANTIC_REFUSALS.get(f"{case.method.upper()} {case.path}")
    if allowed is None:
        return None  # no 422 is allowed there: positive_data_acceptance reports it
    kinds = refusal_kinds(response.json()["detail"])
    if not kinds <= allowed:
        raise AssertionError(
            f"a schema-valid request was refused for {sorted(kinds - allowed)}, which the "
            f"schema could state; only {sorted(allowed)} cannot be"
        )
    return None
