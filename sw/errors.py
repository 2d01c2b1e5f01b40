"""The project exceptions. The CLI turns each into a single line on stderr and a non-zero exit."""


class ApicalError(Exception):
    """A user-facing error: a bad config, IR, checkpoint, data file or tool setup.

    The message is one line naming the file, field or layer at fault.
    """


class CheckFailed(ApicalError):
    """A comparison disagreed (RTL vs golden, Brevitas vs golden): the step's summary was written.

    The message names the first difference (sample, layer, index, expected, got)
    and the summary file that holds the rest. A flow stops at it, and the step
    is recorded as failed so that a re-run runs it again.
    """
