"""Evaluation protocols: frozen features per layer, linear probes, results and tables."""
