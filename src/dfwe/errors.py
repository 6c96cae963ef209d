"""The one exception type that means "the user gave us something wrong"."""

from __future__ import annotations


class BadInput(Exception):
    """Bad user input: a missing file, an unknown label, a bad config value, mismatched checkpoints.

    The CLI prints the message as one line on stderr and exits with code 2. The message names the
    file, key or value at fault and, where it can, says how to fix it.
    """
