"""The OpenAPI schema of this deployment: what it accepts and what it answers, exactly.

FastAPI derives the schema from the routes and the models, whose bounds are absolute.
Some rules belong to the running service, and the schema states them too, so that a
client (or a fuzzer) reading it is told the truth:

- the configured limits (``CHARNN_MAX_*``) bound the fields they limit: a value between
  the setting and the model's own bound is refused with a 422 naming the setting; a
  hyperparameter whose default the setting forbids becomes required;
- the devices this machine can train on (local backend; the rq backend's GPU workers
  come and go, so its schema keeps the general pattern);
- without API keys no request needs credentials (loopback clients are served as they are),
  so no operation declares a security requirement and none answers 401;
- bounds are written as the integers they are (FastAPI's OpenAPI model makes every bound
  a float: ``"minimum": 1.0``, which some generators mishandle on integer fields).

Rules that relate values to each other or to stored models (aligned pairs, characters
outside a vocabulary, a training job's total cost) cannot be stated in JSON Schema; they
are refused with a 422 whose ``type`` names the rule (``invalid_data``,
``unknown_character``, ``limit_exceeded``, ``invalid_request``).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.api.bodies import add_components
from app.api.uploads import MULTIPART_BODIES
from app.jobs.submit import HYPERPARAMETER_LIMITS
from app.ml.device import available_devices
from app.settings import Settings

Schema = dict[str, Any]
REF_PREFIX = "#/components/schemas/"


def operation_id(route: APIRoute) -> str:
    """The handler's name: ``get_job``, not FastAPI's ``get_job_jobs__job_id__get``.

    Generated clients name their functions after it, so it is part of the API: a test
    pins every id, and renaming a handler means changing it there on purpose.
    """
    return route.name


def install_openapi(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi

    def openapi() -> Schema:
        if not app.openapi_schema:
            app.openapi_schema = tailor(copy.deepcopy(generate()), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def tailor(schema: Schema, settings: Settings) -> Schema:
    components: Schema = schema["components"]["schemas"]
    add_components(components)  # bodies the routes read themselves (off the event loop)
    components.update(MULTIPART_BODIES)
    train = request_body(schema, "/train", components)
    limit_training(train, components, settings)
    if settings.job_backend == "local":
        devices = available_devices()
        device = train["properties"]["device"]
        device["anyOf"] = [{"type": "string", "enum": devices}, {"type": "null"}]
        device["description"] = f"Where to train: {', '.join(devices)}; default: the service's."
    limit_serving(schema, components, settings)
    if not settings.key_scopes:
        open_access(schema)
    integral_bounds(schema)
    return schema


def request_body(schema: Schema, path: str, components: Schema) -> Schema:
    """The component schema of the JSON body of POST ``path``."""
    body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return resolve(body["schema"], components)


def resolve(schema: Schema, components: Schema) -> Schema:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: Schema = components[ref.removeprefix(REF_PREFIX)]
    return found


def data_variant(train: Schema, components: Schema, field: str) -> Schema:
    """The first variant of ``data`` that holds ``field``."""
    return data_variants(train, components, field)[0]


def data_variants(train: Schema, components: Schema, field: str) -> list[Schema]:
    """The variants of ``data`` (pairs with targets, pairs with labels, text) that hold
    ``field``."""
    data = train["properties"]["data"]
    # ``data`` may be null (a dataset given instead): its variants are in the non-null branch
    union = next((b for b in data.get("anyOf", []) if "oneOf" in b), data)
    variants = [resolve(v, components) for v in union["oneOf"]]
    found = [v for v in variants if field in v["properties"]]
    if not found:
        raise KeyError(field)
    return found


def limit(schema: Schema, keyword: str, value: int | float, setting: str) -> None:
    """Tighten ``schema[keyword]`` (a maximum, maxLength or maxItems) to a setting's value."""
    current = schema.get(keyword)
    schema[keyword] = value if current is None else min(current, value)
    note = f"At most {value} here ({setting})."
    schema["description"] = f"{schema['description']} {note}" if "description" in schema else note


def integers_of(field: Schema) -> Schema:
    """The schema of ``field``'s integers: itself, or its integer branch where it may be
    null (the sizes an architecture does not use)."""
    branches = [b for b in field.get("anyOf", []) if b.get("type") == "integer"]
    return branches[0] if branches else field


def limit_training(train: Schema, components: Schema, settings: Settings) -> None:
    # the request's hyperparameters get their own component: responses keep the absolute
    # bounds (a version imported, or trained before the settings changed, may exceed these)
    shared = train["properties"]["hyperparameters"]
    hyperparameters = copy.deepcopy(resolve(shared, components))
    hyperparameters["title"] = "TrainingHyperparameters"
    required = []
    for name, setting in HYPERPARAMETER_LIMITS.items():
        field = hyperparameters["properties"][name]
        value = getattr(settings, setting)
        limit(integers_of(field), "maximum", value, f"CHARNN_{setting.upper()}")
        if field.get("default", 0) > value:  # leaving it out would ask for too much
            del field["default"]
            required.append(name)
    if required:
        hyperparameters["required"] = required
        train["required"] = [*train.get("required", []), "hyperparameters"]
    components["TrainingHyperparameters"] = hyperparameters
    train["properties"]["hyperparameters"] = {"$ref": REF_PREFIX + "TrainingHyperparameters"}
    for example in train.get("examples", []):  # the examples work here too
        values = example.get("hyperparameters", {})
        for name, setting in HYPERPARAMETER_LIMITS.items():
            if name in values:
                values[name] = min(values[name], getattr(settings, setting))
            elif name in required:
                values[name] = getattr(settings, setting)

    for variant in data_variants(train, components, "pairs"):  # with targets, with labels
        pairs = variant["properties"]["pairs"]
        limit(pairs, "maxItems", settings.max_training_pairs, "CHARNN_MAX_TRAINING_PAIRS")
        pair = resolve(pairs["items"], components)
        for side in ("input", "target"):
            if side in pair["properties"]:
                limit(
                    pair["properties"][side],
                    "maxLength",
                    settings.max_training_chars,
                    "CHARNN_MAX_TRAINING_CHARS",
                )
    text = data_variant(train, components, "text")["properties"]["text"]
    limit(text, "maxLength", settings.max_training_chars, "CHARNN_MAX_TRAINING_CHARS")


def limit_serving(schema: Schema, components: Schema, settings: Settings) -> None:
    predict = request_body(schema, "/predict", components)["properties"]
    limit(predict["inputs"], "maxItems", settings.max_predict_inputs, "CHARNN_MAX_PREDICT_INPUTS")
    predict["inputs"]["items"]["maxLength"] = settings.max_input_length
    generate = request_body(schema, "/generate", components)["properties"]
    limit(generate["prompt"], "maxLength", settings.max_input_length, "CHARNN_MAX_INPUT_LENGTH")
    limit(generate["length"], "maximum", settings.max_generate_length, "CHARNN_MAX_GENERATE_LENGTH")


BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})


def integral_bounds(node: Any) -> None:
    """``"maximum": 2147483647.0`` -> ``2147483647``, everywhere in the schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            else:
                integral_bounds(value)
    elif isinstance(node, list):
        for item in node:
            integral_bounds(item)


def open_access(schema: Schema) -> None:
    """No keys configured: nothing to present, so nothing is asked for, and no 401."""
    schema["components"].pop("securitySchemes", None)
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
            operation["responses"].pop("401", None)
