"""Output channels, registered by name (see :mod:`solvers.channels.base`)."""
from .base import Channel, PosteriorMoments, make_channel, register_channel, registered_channels

# Importing the model modules registers their channels.
from . import deep_attention  # noqa: E402,F401
try:  # written alongside; tolerated while absent
    from . import multi_index  # noqa: E402,F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["Channel", "PosteriorMoments", "make_channel", "register_channel", "registered_channels"]
