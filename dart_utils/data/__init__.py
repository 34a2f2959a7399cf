"""The data: the difference-awareness suite, its splits, the external safety suites, checks against the data."""
