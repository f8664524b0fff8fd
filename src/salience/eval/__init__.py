"""Evaluation of recall quality (LoCoMo) against baselines measured in the same run."""
