"""The self-contained HTML report of a run and the modality-gap analysis."""
