"""The client's old import path, kept for scripts written against it: use ``client``."""

from client.api import *  # noqa: F403
from client.api import __all__  # noqa: F401
