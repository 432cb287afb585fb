"""synthkd: black-box knowledge distillation of LLMs through synthetic data."""

__version__ = "0.1.0"
