"""The one exception type that the CLI turns into a single line and a non-zero exit."""


class UserError(Exception):
    """Bad input or a missing prerequisite, explained in one line the user can act on."""
