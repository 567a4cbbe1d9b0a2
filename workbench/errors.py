"""User-facing errors.

Anything raised as a `WorkbenchError` is a problem with the user's input or environment:
the CLI prints its message on one line and exits non-zero, without a traceback.
"""


class WorkbenchError(Exception):
    """A problem the user can fix; the message says how."""


class ModelLoadError(WorkbenchError):
    """The model named by `--model` could not be found or loaded."""


class StoreError(WorkbenchError):
    """The DuckDB store could not be opened or written."""


class UnknownMethodError(WorkbenchError):
    """An explanation method name that is not registered."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown method {name!r}; known methods: {', '.join(sorted(known))}")
        self.name = name
        self.known = known
