"""sarbridge: cross-modal optical <-> SAR retrieval."""

__version__ = "0.1.0"
