"""The HTTP ceiling: the same stack and the same request body, parsed and validated,
and a constant answer. No model runs.

    uvicorn bench.echo_server:app
"""

from __future__ import annotations

from fastapi import FastAPI

from app.schemas import PredictRequest

app = FastAPI()
ANSWER = {"model_name": "tutorial", "version": 1, "outputs": ["ohlol"]}


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, object]:
    return ANSWER
