"""A platform file that fails to import, for the error `collector run` gives about it."""

raise ImportError("this file is broken on purpose")
