"""LightningDataModules, with real loaders, offline folders and embedded defaults."""
