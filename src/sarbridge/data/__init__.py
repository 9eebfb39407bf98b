"""Data readers, SAR preprocessing, samplers and synthetic generators."""
