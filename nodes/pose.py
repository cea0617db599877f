"""Retargeted Pose: the retargeter's joints as POSE_KEYPOINT and a skeleton video."""

import math

from comfy_api.latest import io

from ..im_animation_core.keypoints import DEFAULT_CONFIDENCE_THRESHOLD
from ..im_animation_core.pose_export import pose_keypoint_frames, render_pose_frames, visible_joints
from . import socket_checks, types
from .errors import user_errors

NODE = "Retargeted Pose"


class RetargetedPose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_RetargetedPose",
            display_name=NODE,
            category=types.CATEGORY,
            description="Where the retargeter puts the identity's joints in each output frame: as POSE_KEYPOINT "
                        "(the DWPose/OpenPose layout, on the output canvas) and as a DWPose-style skeleton "
                        "video, e.g. for the pose_video of a pose-driven video model.",
            inputs=[
                types.RetargetedMotion.Input("retargeted_motion", tooltip="From Retarget to Identity."),
                io.Float.Input("confidence_threshold", default=DEFAULT_CONFIDENCE_THRESHOLD, min=0.0, max=1.0,
                               step=0.01,
                               tooltip="A joint is kept when the retargeter's heatmap peak for it exceeds this "
                                       "(0.3 as DWPose); lower keeps more uncertain joints."),
                io.Boolean.Input("hands", default=True,
                                 tooltip="Write and draw the 2 x 21 hand joints; off: the body only."),
            ],
            outputs=[types.PoseKeypoint.Output(display_name="pose_keypoints"),
                     io.Image.Output(display_name="pose_image")],
        )

    @classmethod
    def execute(cls, retargeted_motion, confidence_threshold, hands) -> io.NodeOutput:
        rm = socket_checks.retargeted(NODE, "retargeted_motion", retargeted_motion)
        if not math.isfinite(confidence_threshold):
            raise ValueError(f"{NODE}: confidence_threshold is {confidence_threshold}; give a number from 0 to 1.")
        if rm.keypoints is None or rm.keypoint_confidence is None:
            raise ValueError(f"{NODE}: input 'retargeted_motion' carries no joints (it was not made by this pack's "
                             "Retarget to Identity); connect the output of Retarget to Identity.")
        with user_errors(NODE):
            visible = visible_joints(rm.keypoint_confidence, confidence_threshold)
            frames = pose_keypoint_frames(rm.keypoints, visible, rm.width, rm.height, hands=hands)
            image = render_pose_frames(rm.keypoints, visible, rm.width, rm.height, hands=hands)
        return io.NodeOutput(frames, image)
