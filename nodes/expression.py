"""Expression Encode."""

from comfy_api.latest import io

from ..im_animation_core.pipeline import ExpressionFeatures, encode_expression, face_boxes
from . import socket_checks, types
from .devices import loaded
from .errors import user_errors


class ExpressionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_ExpressionEncode",
            display_name="Expression Encode",
            category=types.CATEGORY,
            description="Encodes the driving character's facial expression, frame by frame, from face crops. "
                        "Without keypoints the face is assumed in the upper centre of the frame.",
            inputs=[
                types.Modules.Input("im_animation_modules", tooltip="From Load IM-Animation Modules."),
                io.Image.Input("frames", tooltip="The same driving frames that went into Encode Driving Video."),
                types.MotionTokens.Input("motion_tokens",
                                         tooltip="From Encode Driving Video: its stride and frame selection are "
                                                 "applied here too, so expression and motion stay aligned."),
                io.Custom("POSE_KEYPOINT").Input(
                    "pose_keypoints", optional=True,
                    tooltip="Optional DWPose/OpenPose keypoints of the driving frames (e.g. from a DWPose "
                            "Estimator node): the face crop follows the head. Without them the face is assumed "
                            "in the upper centre of the frame."),
            ],
            outputs=[types.Expression.Output(display_name="expression")],
        )

    @classmethod
    def execute(cls, im_animation_modules, frames, motion_tokens, pose_keypoints=None) -> io.NodeOutput:
        node = "Expression Encode"
        socket_checks.modules(node, "im_animation_modules", im_animation_modules)
        socket_checks.image(node, "frames", frames)
        socket_checks.motion_tokens(node, "motion_tokens", motion_tokens)
        if frames.shape[0] != motion_tokens.source_frame_count:
            raise ValueError(f"{node}: frames has {frames.shape[0]} frames but the motion tokens came from a clip of "
                             f"{motion_tokens.source_frame_count}: connect the same frames as Encode Driving Video.")
        kept = frames[motion_tokens.frame_indices]
        with user_errors(node):
            boxes = None
            if pose_keypoints is not None:
                if len(pose_keypoints) != frames.shape[0]:
                    raise ValueError(f"{node}: pose_keypoints has {len(pose_keypoints)} frames, frames has "
                                     f"{frames.shape[0]}: run the pose node on the same frames.")
                picked = [pose_keypoints[i] for i in motion_tokens.frame_indices.tolist()]
                boxes = face_boxes(picked, frames.shape[2], frames.shape[1])
            modules = loaded(im_animation_modules)
            tokens = encode_expression(modules, kept, boxes)
        return io.NodeOutput(ExpressionFeatures(tokens=tokens, modules=im_animation_modules))
