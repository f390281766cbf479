"""madapter: multi-level image-to-video adaptation of frozen image models (M-adapter)."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
