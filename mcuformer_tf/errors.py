"""The one exception type for mistakes a user can fix (bad config, missing file, ...).

The CLI turns it into a one-line message and exit code 2; library users catch
it as a ValueError.
"""


class McuformerError(ValueError):
    """A user-facing error whose message is one line naming what is wrong."""
