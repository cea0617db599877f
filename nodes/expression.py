"""Expression Encode."""

from comfy_api.latest import io

from ..im_animation_core.pipeline import ExpressionFeatures, encode_expression
from . import types
from .devices import loaded
from .errors import user_errors


class ExpressionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
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
            ],
            outputs=[types.Expression.Output(display_name="expression")],
        )

    @classmethod
    def execute(cls, im_animation_modules, frames, motion_tokens) -> io.NodeOutput:
        node = "Expression Encode"
        if frames.shape[0] != motion_tokens.source_frame_count:
            raise ValueError(f"{node}: frames has {frames.shape[0]} frames but the motion tokens came from a clip of "
                             f"{motion_tokens.source_frame_count}: connect the same frames as Encode Driving Video.")
        modules = loaded(im_animation_modules)
        with user_errors(node):
            tokens = encode_expression(modules, frames[motion_tokens.frame_indices])
        return io.NodeOutput(ExpressionFeatures(tokens=tokens, modules=im_animation_modules))
