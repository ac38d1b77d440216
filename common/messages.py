"""One line of an error message: what every one-line error and note is built from."""
from __future__ import annotations

LIMIT = 160  # characters of a message kept inside another line


def first_line(error: BaseException | str, limit: int = LIMIT) -> str:
    """The first line of a message, cut at `limit` characters; for an exception, after its type's
    name ("KeyError: 'policy'"), or the name alone when the message is empty."""
    text = str(error).strip()
    line = text.splitlines()[0][:limit] if text else ""
    if not isinstance(error, BaseException):
        return line
    name = type(error).__name__
    return f"{name}: {line}" if line else name
