"""The one project exception. The CLI turns it into a single line on stderr."""


class ApicalError(Exception):
    """A user-facing error: a bad config, IR, checkpoint, data file or tool setup.

    The message is one line naming the file, field or layer at fault.
    """
