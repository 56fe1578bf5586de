"""The naive way to serve the tutorial's model, as a reference: a sync endpoint that
runs one forward pass per input of each request, the way the tutorial predicts.

    BENCH_STORE=... uvicorn bench.naive_server:app
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fastapi import FastAPI

from app.ml.checkpoint import load_checkpoint
from app.ml.model import build_model
from app.schemas import PredictRequest

app = FastAPI()
MODELS = {}
for model_dir in (Path(os.environ["BENCH_STORE"]) / "models").iterdir():
    checkpoint = load_checkpoint(next(model_dir.iterdir()))  # the first version
    model = build_model(checkpoint.config)
    model.load_state_dict(checkpoint.weights)
    MODELS[model_dir.name] = (model.eval(), checkpoint.vocab)


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, object]:
    model, vocab = MODELS[request.model_name]
    outputs = []
    for text in request.inputs:
        ids = torch.tensor([[vocab.input_ids[c] for c in text]])
        with torch.no_grad():
            logits, _ = model(ids)
        outputs.append("".join(vocab.output[i] for i in logits[0].argmax(dim=1).tolist()))
    return {"model_name": request.model_name, "version": 1, "outputs": outputs}
