"""The error every preprocessing stage raises when it cannot complete."""


class StageError(RuntimeError):
    """A stage cannot complete; the message says why and what to do."""
