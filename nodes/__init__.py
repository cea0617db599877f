"""ComfyUI nodes of the IM-Animation pack (thin layer over im_animation_core)."""

from .expression import ExpressionEncode
from .motion_tokenizer import EncodeDrivingVideo, LoadMotionTokenizer
from .retarget import LoadIMAnimationModules, RetargetToIdentity
from .sampler import IMAnimationSampler

NODES = [
    LoadMotionTokenizer,
    EncodeDrivingVideo,
    LoadIMAnimationModules,
    RetargetToIdentity,
    ExpressionEncode,
    IMAnimationSampler,
]
