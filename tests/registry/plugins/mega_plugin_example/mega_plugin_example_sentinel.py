"""Importing this module is a bug: availability checks must use importlib.util.find_spec."""

raise ImportError("mega_plugin_example_sentinel was imported; adapter availability must not import")
