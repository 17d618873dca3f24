"""Subcommands of the ``mega-plugin`` CLI, one module each (see ``mega_plugin.cli``)."""
