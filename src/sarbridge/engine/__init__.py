"""Training and evaluation engine shared by every task."""
