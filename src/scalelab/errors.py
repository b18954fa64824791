"""The one exception type that means "the user gave us bad input".

The CLI turns a UserError into one line on stderr and exit code 2; everything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user (spec, CSV, flags, study folder). The message is shown as is."""
