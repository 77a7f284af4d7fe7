"""The one exception type the owner side raises for bad input."""


class PipelineError(Exception):
    """A problem with the user's input or files, reported to the user without a traceback."""
