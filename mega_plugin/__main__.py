"""``python -m mega_plugin`` runs the CLI."""

import sys

from mega_plugin.cli import main

sys.exit(main())
