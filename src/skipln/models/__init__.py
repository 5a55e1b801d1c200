"""Plain ``nn.Module`` networks that take a :class:`skipln.skip.SkipStrategy`."""
