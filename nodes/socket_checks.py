"""Checks that a pack socket carries what it says. POST /prompt accepts any JSON value for an input of a custom
type (a dict, a number) without checking it, so each node checks before use and names what to connect."""

import torch

from ..im_animation_core.modules import IMAnimationModules
from ..im_animation_core.motion import MotionTokens
from ..im_animation_core.pipeline import ExpressionFeatures, RetargetedMotion
from ..im_animation_core.tokenizer import MotionTokenizer


def _fail(node: str, name: str, value, wanted: str):
    raise ValueError(f"{node}: input '{name}' got {type(value).__name__} where it needs {wanted}: connect that "
                     "node's output to it.")


def motion_tokens(node: str, name: str, value) -> MotionTokens:
    if not isinstance(value, MotionTokens):
        _fail(node, name, value, "motion tokens from Encode Driving Video or Load Motion Tokens")
    return value


def _patched(node: str, name: str, value, cls, wanted: str):
    if not isinstance(getattr(value, "model", None), cls):
        _fail(node, name, value, wanted)
    return value


def modules(node: str, name: str, value):
    return _patched(node, name, value, IMAnimationModules, "the output of Load IM-Animation Modules")


def tokenizer(node: str, name: str, value):
    return _patched(node, name, value, MotionTokenizer, "the output of Load Motion Tokenizer")


def retargeted(node: str, name: str, value) -> RetargetedMotion:
    if not isinstance(value, RetargetedMotion):
        _fail(node, name, value, "the output of Retarget to Identity")
    return value


def expression(node: str, name: str, value) -> ExpressionFeatures:
    if not isinstance(value, ExpressionFeatures):
        _fail(node, name, value, "the output of Expression Encode")
    return value


def image(node: str, name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[-1] not in (3, 4):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{node}: input '{name}' got {shape} where it needs an IMAGE batch [frames, height, "
                         "width, 3]: connect a Load Video / Get Video Components or Load Image output.")
    return value
