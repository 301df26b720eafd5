"""HeSer: few-shot head swapping in the wild."""

__version__ = "0.1.0"
