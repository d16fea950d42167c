"""Errors the command line turns into one ``error:`` line (kept import-light)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, foreign or inconsistent."""


class TrainingError(RuntimeError):
    """Training could not go on (e.g. a non-finite loss); the message says what to do."""
