"""Serving: loaded models, cached per device."""
