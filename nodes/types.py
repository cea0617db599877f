"""The pack's socket types. Each carries one documented object from im_animation_core (see README)."""

from comfy_api.latest import io

# A ModelPatcher around im_animation_core.MotionTokenizer.
MotionTokenizer = io.Custom("IMA_MOTION_TOKENIZER")
# im_animation_core.motion.MotionTokens: [T,32,12] tokens, [T,32] indices, frame indices, fps.
MotionTokens = io.Custom("IMA_MOTION_TOKENS")
# A ModelPatcher around im_animation_core.modules.IMAnimationModules (retarget, expression, DiT adapters).
Modules = io.Custom("IMA_MODULES")
# im_animation_core.pipeline.RetargetedMotion: [1,C_r,F_lat,h,w] map on the latent grid + identity latent, and
# the retargeted joints per output frame.
RetargetedMotion = io.Custom("IMA_RETARGETED_MOTION")
# The DWPose/OpenPose keypoints pose nodes exchange: one dict per frame (im_animation_core.pose_export).
PoseKeypoint = io.Custom("POSE_KEYPOINT")
# im_animation_core.pipeline.ExpressionFeatures: [T,K,W] per-frame expression tokens.
Expression = io.Custom("IMA_EXPRESSION")

CATEGORY = "IM-Animation"

# Words users type in the node search. Newer ComfyUI versions read `search_aliases` from the schema; this
# pinned version has no such field (passing it would break the import), so it is added only where supported.
_ALIASES = ["animate", "animate character", "motion transfer", "retarget", "pose transfer", "im-animation"]
ALIASES = {"search_aliases": _ALIASES} if "search_aliases" in getattr(io.Schema, "__dataclass_fields__", {}) else {}
