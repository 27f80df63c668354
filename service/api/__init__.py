"""The HTTP layer: typed dependencies (``deps``), OpenAPI response declarations
(``responses``) and the routes (``routes/``).  Routes are thin: validate (FastAPI + the
registry's ``ask``), call the engine or the sweeps, render; errors are exceptions that
``service.problems`` maps to problem+json."""
