"""Predict (map inputs to outputs) and generate (continue a prompt).

While the service runs, ``app.api.fast_predict`` serves ``POST /predict`` and hands this
route what it refuses; the two must answer alike (tests/api/test_fast_predict.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.auth import Caller
from app.api.deps import ServicesDep, services_of
from app.api.errors import AUTH_RESPONSES, error_responses
from app.schemas import (
    GenerateRequest,
    GenerateResponse,
    PredictRequest,
    PredictResponse,
    predict_response_json,
)

if TYPE_CHECKING:
    from app.ml.inference import Prediction
from app.ml.inference import reported_values

router = APIRouter(
    tags=["predict"], responses={**AUTH_RESPONSES, **error_responses(400, 404, 429, 503)}
)

# generate also refuses a model trained on pairs: a 422 with a message, not a field list
GENERATE_422 = {
    "description": "Invalid request, unknown prompt characters, or a model trained on pairs",
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    {"$ref": "#/components/schemas/HTTPValidationError"},
                    {"$ref": "#/components/schemas/ErrorMessage"},
                ]
            }
        }
    },
}


@router.post("/predict", response_model=PredictResponse)
async def predict(request: PredictRequest, http: Request, caller: Caller) -> Response:
    """Map each input to its output string (one output character per input character)."""
    services = services_of(http)  # not a dependency: resolving one costs the hot path
    services.limiter.check(caller)
    row, predictions = await services.serving.predict(
        request.model_name,
        request.version,
        request.inputs,
        top_k=request.top_k,
        probabilities=request.return_probabilities,
    )
    services.metrics.predictions.labels(request.model_name).inc(len(predictions))
    # serialized here, once: FastAPI would validate the response model a second time
    body = await predict_body(request, row.version, predictions)
    return Response(body, media_type="application/json")


INLINE_VALUES = 4096  # reported values an answer may hold and still be written on the loop


async def predict_body(
    request: PredictRequest, version: int, predictions: list[Prediction]
) -> bytes:
    """The answer's JSON: a large one is written in a worker thread, off the event loop."""
    values = reported_values(request.inputs, request.top_k, request.return_probabilities)
    if values <= INLINE_VALUES:
        return predict_response_json(request, version, predictions)
    return await run_in_threadpool(predict_response_json, request, version, predictions)


@router.post("/generate", response_model=GenerateResponse, responses={422: GENERATE_422})
async def generate(
    request: GenerateRequest, services: ServicesDep, caller: Caller
) -> GenerateResponse:
    """Continue a prompt with a model trained on text."""
    services.limiter.check(caller)
    row, text = await services.serving.generate(
        request.model_name,
        request.version,
        request.prompt,
        request.length,
        request.temperature,
        request.seed,
    )
    return GenerateResponse(model_name=request.model_name, version=row.version, text=text)
