"""Losses for metric learning and modality alignment."""
