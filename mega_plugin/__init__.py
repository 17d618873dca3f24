"""mega-plugin: MEGA for Hugging Face transformers and fairseq2 from one backend-neutral core.

Importing the package registers MEGA with transformers' Auto classes when transformers is
installed (and does nothing else when it is not).
"""

from __future__ import annotations

__version__ = "0.1.0"
