"""glan: GLAN (Generalized Instruction Tuning) instruction data from a taxonomy of knowledge."""

__version__ = "0.1.0"
