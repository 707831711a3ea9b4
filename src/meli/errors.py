"""The one exception type a user is meant to see."""


class MeliError(Exception):
    """A problem with the user's input, data or params.

    The CLI prints its message as a single line and exits non-zero; the message names the file,
    line or key that is wrong, so no traceback is needed to act on it.
    """
