"""Version of the solvers' numbers: part of every result and of every cache key, so bump it
whenever a change alters any number (old cached answers are then not served)."""
__version__ = "0.5.15"
