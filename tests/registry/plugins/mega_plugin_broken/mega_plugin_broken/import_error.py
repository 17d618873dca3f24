"""Fails to import: depends on a package that is not installed."""

import mega_plugin_broken_missing_dependency  # noqa: F401
