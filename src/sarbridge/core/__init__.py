"""The ground floor: errors, config machinery, trainer, checkpoints, distributed runs and caches."""
