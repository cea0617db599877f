"""Errors raised by im_animation_core.

Every error a user can trigger with bad input derives from ``IMAnimationError`` and carries a
message that names the input and says what to do; the node layer shows it as is.
"""


class IMAnimationError(ValueError):
    """Bad input or an unusable file; the message is meant for the user."""


class CheckpointError(IMAnimationError):
    """A weights file is missing, unreadable, of another model or of mismatching shapes."""


class InputError(IMAnimationError):
    """A tensor given to a model or preprocessing function has the wrong shape, range or content."""
