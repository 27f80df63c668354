"""Typed errors raised by the solvers."""


class SpecError(ValueError):
    """A model or numerical parameter is outside its allowed range.

    Attributes name the offending parameter, the value received and the allowed
    range, so that callers (the REST service) can report them field by field.
    """

    def __init__(self, parameter: str, value, allowed: str):
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        super().__init__(f"{parameter}={value!r} is not allowed: expected {allowed}")
