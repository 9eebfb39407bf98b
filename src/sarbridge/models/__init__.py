"""Modality-aware embedding models."""
