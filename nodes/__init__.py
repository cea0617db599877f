"""ComfyUI nodes of the IM-Animation pack (thin layer over im_animation_core)."""

from .apply import ApplyIMAnimation
from .conditioning import IMAnimationConditioning
from .expression import ExpressionEncode
from .motion_files import LoadMotionTokens, SaveMotionTokens
from .motion_tokenizer import EncodeDrivingVideo, LoadMotionTokenizer
from .pose import RetargetedPose
from .pose_save import SavePoseKeypoints
from .preview import PreviewMotionHeatmaps
from .retarget import LoadIMAnimationModules, RetargetToIdentity
from .sampler import IMAnimationSampler
from .video import LoadDrivingVideoPath

NODES = [
    LoadMotionTokenizer,
    LoadDrivingVideoPath,
    EncodeDrivingVideo,
    SaveMotionTokens,
    LoadMotionTokens,
    PreviewMotionHeatmaps,
    LoadIMAnimationModules,
    RetargetToIdentity,
    RetargetedPose,
    SavePoseKeypoints,
    ExpressionEncode,
    ApplyIMAnimation,
    IMAnimationConditioning,
    IMAnimationSampler,
]
