"""charnn: train and serve character-level recurrent networks over HTTP."""

__version__ = "0.1.0"
