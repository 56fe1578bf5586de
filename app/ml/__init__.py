"""The machine-learning core: pure PyTorch (and pydantic for its configs).

Nothing here knows about HTTP, databases or queues; it can be used on its own,
like the tutorial it grew out of.
"""
