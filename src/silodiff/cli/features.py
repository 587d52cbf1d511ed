"""Imports every feature module of the CLI so its commands register on ``app`` (one line each)."""

from . import forget  # noqa: F401
from . import attribute  # noqa: F401
from . import serve  # noqa: F401
from . import keys  # noqa: F401
from . import defences  # noqa: F401
from . import audit  # noqa: F401
from . import base  # noqa: F401
from . import export  # noqa: F401
