"""Errors that reach the user as one line and a non-zero exit, never a traceback."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and, if possible, what to do."""
