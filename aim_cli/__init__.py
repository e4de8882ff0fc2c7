"""aim: offline AI model modulation by logits redistribution."""

__version__ = "0.1.0"
