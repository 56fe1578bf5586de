"""Persistence: the registry (SQLAlchemy) and where checkpoints live on disk."""
