"""Cleaning after generation: filters, near-duplicate removal, benchmark decontamination."""
