"""Turn the core's user-facing errors into messages that name the node."""

from contextlib import contextmanager

from ..im_animation_core.errors import IMAnimationError


@contextmanager
def user_errors(node: str):
    """Re-raise IMAnimationError as ValueError prefixed with the node's name (shown in the error popup)."""
    try:
        yield
    except IMAnimationError as e:
        raise ValueError(f"{node}: {e}") from None
