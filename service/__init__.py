"""Staircase REST service: thresholds of deep attention and multi-index models over HTTP.

``service`` imports ``solvers``; ``solvers`` never imports ``service``.
"""
