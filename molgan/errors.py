"""The error every front end reports the same way: a request that cannot be honoured as given.

The training and serving launchers raise it with a message that names the option or setting at
fault; the command line prints it on one line and exits with code 2, as for a bad option.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Options or settings that do not describe something that can run; the message says which."""
