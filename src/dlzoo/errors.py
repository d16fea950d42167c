"""Errors the command line turns into one ``error:`` line (kept import-light)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, foreign or inconsistent."""


class TrainingError(RuntimeError):
    """Training could not go on (e.g. a non-finite loss); the message says what to do."""


class TrainingInterrupted(TrainingError):
    """Ctrl-C or SIGTERM: a checkpoint of the moment was saved; the message says how to resume."""


class StopRun(Exception):  # noqa: N818  (a signal, not a failure)
    """Raised by an ``on_epoch_end`` callback to end a run early (a pruned sweep trial):
    the run folder is marked ``stopped`` and the exception reaches the caller."""
