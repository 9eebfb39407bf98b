"""Contrastive optical/SAR pretraining (TransOSS start point)."""
