"""The one exception type for mistakes the user can fix: reported as one line, without a traceback."""


class UserError(Exception):
    """A problem with the command, its flags or its environment, with a message that says what to do."""
