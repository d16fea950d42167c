"""Tasks: the objective of one training step. Importing this package registers them."""

from dlzoo.tasks import classify, multitask, regress  # noqa: F401  (registers the tasks)
from dlzoo.tasks.base import NonFiniteLossError, Task

__all__ = ["NonFiniteLossError", "Task"]
