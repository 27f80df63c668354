"""Output channels, registered by name (see :mod:`solvers.channels.base`)."""
from .base import Channel, PosteriorMoments, make_channel, register_channel

# Importing the model modules registers their channels.
from . import deep_attention, multi_index  # noqa: E402,F401

__all__ = ["Channel", "PosteriorMoments", "make_channel", "register_channel"]
