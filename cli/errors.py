"""Errors that the CLI prints as one clear line instead of a traceback."""


class UserError(Exception):
    """A mistake in input, config or environment that the operator can fix."""
