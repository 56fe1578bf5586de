"""Predict (map inputs to outputs) and generate (continue a prompt)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.schemas import (
    CharProbabilityPublic,
    GenerateRequest,
    GenerateResponse,
    PredictionDetail,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictResponse)
async def predict(request: PredictRequest, services: ServicesDep) -> PredictResponse:
    """Map each input to its output string (one output character per input character)."""
    row, predictions = await services.serving.predict(
        request.model_name,
        request.version,
        request.inputs,
        top_k=request.top_k,
        probabilities=request.return_probabilities,
    )
    details = None
    if request.top_k or request.return_probabilities:
        details = [
            PredictionDetail(
                probabilities=p.probabilities,
                top_k=[[CharProbabilityPublic(**vars(c)) for c in pos] for pos in p.top_k]
                if p.top_k is not None
                else None,
            )
            for p in predictions
        ]
    return PredictResponse(
        model_name=request.model_name,
        version=row.version,
        outputs=[p.output for p in predictions],
        details=details,
    )


@router.post("/generate", response_model=GenerateResponse)
async def generate(request: GenerateRequest, services: ServicesDep) -> GenerateResponse:
    """Continue a prompt with a model trained on text."""
    row, text = await services.serving.generate(
        request.model_name,
        request.version,
        request.prompt,
        request.length,
        request.temperature,
        request.seed,
    )
    return GenerateResponse(model_name=request.model_name, version=row.version, text=text)
