"""Loaded models, kept in a bounded LRU per device.

A version is loaded from its verified checkpoint the first time it is asked for;
versions are immutable, so a cached predictor never goes stale, and a newly
published version is simply a new key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from app.ml.checkpoint import load_checkpoint
from app.ml.inference import Predictor
from app.store.layout import StoreLayout

Key = tuple[str, str]  # (model name, version directory)


class ModelCache:
    def __init__(self, layout: StoreLayout, device: torch.device, capacity: int) -> None:
        self.layout = layout
        self.device = device
        self.capacity = capacity
        self._loaded: OrderedDict[Key, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Key, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._loaded)

    def peek(self, model_name: str, directory: str) -> Predictor | None:
        """The predictor if it is loaded already (never loads: safe in the event loop)."""
        key = (model_name, directory)
        with self._lock:
            predictor = self._loaded.get(key)
            if predictor is not None:
                self._loaded.move_to_end(key)
            return predictor

    def holds(self, key: Key, predictor: Predictor) -> bool:
        """Whether ``predictor`` is still the loaded one of ``key`` (the LRU order untouched)."""
        with self._lock:
            return self._loaded.get(key) is predictor

    def get(self, model_name: str, directory: str) -> Predictor:
        """The predictor of a version, loading (and verifying) it on first use."""
        key = (model_name, directory)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per version, however many requests wait for it
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            checkpoint = load_checkpoint(self.layout.version_dir(model_name, directory))
            predictor = Predictor.from_checkpoint(checkpoint, self.device)
            with self._lock:
                self._loaded[key] = predictor
                self._loading.pop(key, None)
                while len(self._loaded) > self.capacity:
                    self._loaded.popitem(last=False)
            return predictor

    def evict_model(self, model_name: str) -> None:
        with self._lock:
            for key in [k for k in self._loaded if k[0] == model_name]:
                del self._loaded[key]
