"""The command line (``staircase``, ``python -m staircase``) and the Python client
(``staircase.client``) of the Staircase service."""
