"""A service module that fails while it is imported (for `stdq services list` robustness)."""

raise RuntimeError("this plug-in is broken on purpose")
