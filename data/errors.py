"""The one exception type the data package raises for user mistakes."""


class DataError(ValueError):
    """A problem with the user's data or settings, not a bug.

    The message is a single line that says what is wrong and what to do, so a
    command-line entry point can print it as-is and exit non-zero.
    """
