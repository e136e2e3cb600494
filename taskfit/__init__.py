"""taskfit: run an LLM on your own task and compare prompt strategies (and later fine-tuning) with evidence."""

__version__ = "0.1.0"
