"""Neural-network building blocks shared by every task: modality-aware backbones and heads."""
