"""LightningModules: loss, metrics, optimization and decoding around a network."""
