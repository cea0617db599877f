"""Save Pose Keypoints: a DWPose node's POSE_KEYPOINT as the ``<clip>.json`` that training reads beside a clip.

Training on one's own videos (data.kind "video_folder", docs/training.md) needs each clip's keypoints in a JSON
file of the same name. This node writes them under ComfyUI's output folder; given the frames as well, it
writes the clip beside them under the same name, so the pair always matches in name and frame count (the
stock Save Video counts its own file names and may pick another number than this node)."""

import contextlib
import math
import os
from fractions import Fraction

import av
import folder_paths
from comfy_api.latest import InputImpl, Types, io

from ..im_animation_core.pose_export import save_pose_keypoint_json
from . import types
from .errors import user_errors
from .motion_files import WRITE_ERRORS, cannot_write, checked_prefix, write_whole

NODE = "Save Pose Keypoints"
DEFAULT_PREFIX = "im_animation_clips/clip"
MAX_NAME_BYTES = 200  # a name part stays under common file-system limits with "_00001_.json" appended
# The POSE_KEYPOINT keys the JSON keeps (facts §6, what training reads); anything else a prompt puts in the
# dicts is dropped, so the file holds keypoints only.
FRAME_KEYS = ("canvas_width", "canvas_height")
PERSON_KEYS = ("pose_keypoints_2d", "foot_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
               "hand_right_keypoints_2d")


def schema_frames(frames) -> list:
    """The frames with the POSE_KEYPOINT keys only. A frame or person that is not a dict is passed on as it
    is, for the writer to refuse with its own message."""
    out = []
    for frame in frames:
        if not isinstance(frame, dict):
            out.append(frame)
            continue
        kept = {k: frame[k] for k in FRAME_KEYS if k in frame}
        people = frame.get("people")
        kept["people"] = [{k: p[k] for k in PERSON_KEYS if k in p} if isinstance(p, dict) else p
                          for p in people] if isinstance(people, (list, tuple)) else people
        out.append(kept)
    return out


class SavePoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_SavePoseKeypoints",
            display_name=NODE,
            category=types.CATEGORY,
            description="Saves POSE_KEYPOINT (e.g. from the DWPose Estimator of comfyui_controlnet_aux) as "
                        "<name>.json in the output folder, the per-clip keypoints IM-Animation training reads "
                        "beside a video (data.kind 'video_folder'). Connect the same frames to 'images' to "
                        "save the clip as <name>.mp4 beside it.",
            inputs=[
                types.PoseKeypoint.Input("pose_keypoint",
                                         tooltip="One dict per frame, from a DWPose / OpenPose estimator node (or "
                                                 "Retargeted Pose), run on the frames the clip holds."),
                io.String.Input("filename_prefix", default=DEFAULT_PREFIX,
                                tooltip="Name under ComfyUI's output folder (sub-folders allowed); a counter is "
                                        "appended: <prefix>_00001_.json (and .mp4). Point the training "
                                        "config's data.root at that folder."),
                io.Image.Input("images", optional=True,
                               tooltip="Optional: the frames the pose node saw. Saved as <name>.mp4 beside the "
                                       "JSON, so clip and keypoints share one name and frame count."),
                io.Float.Input("fps", default=24.0, min=1.0, max=240.0, step=1.0,
                               tooltip="Frame rate of the saved clip (used with 'images' only)."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, pose_keypoint, filename_prefix, fps, images=None) -> io.NodeOutput:
        frames = [pose_keypoint] if isinstance(pose_keypoint, dict) else pose_keypoint
        if not isinstance(frames, (list, tuple)) or not frames:
            raise ValueError(f"{NODE}: input 'pose_keypoint' got {type(pose_keypoint).__name__} where it needs "
                             "POSE_KEYPOINT (a list with one dict per frame): connect a DWPose estimator's "
                             "keypoints output.")
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"{NODE}: fps is {fps}; give the clip's frame rate (e.g. 24).")
        frames = schema_frames(frames)
        if images is not None and len(images) != len(frames):
            # A clip whose frames and keypoints differ in number would train on shifted poses.
            raise ValueError(f"{NODE}: 'images' has {len(images)} frames but 'pose_keypoint' {len(frames)}: "
                             "connect the frames the pose node ran on.")
        prefix = checked_prefix(NODE, filename_prefix, DEFAULT_PREFIX, "ComfyUI's output folder", MAX_NAME_BYTES)
        width, height = (int(images.shape[2]), int(images.shape[1])) if images is not None else (0, 0)
        try:
            full, name, counter, subfolder, _ = folder_paths.get_save_image_path(
                prefix, folder_paths.get_output_directory(), width, height)
        except OSError as e:  # e.g. a file where a folder of the prefix should be
            raise ValueError(cannot_write(NODE, f"output/{prefix}", e)) from None
        except Exception as e:  # noqa: BLE001 - the host refuses a folder outside the output with a bare Exception
            raise ValueError(f"{NODE}: filename_prefix '{prefix[:80]}' cannot be saved under the output folder "
                             f"({str(e).strip().splitlines()[0].strip('* ')}).") from None
        stem = f"{name}_{counter:05}_"
        written = []
        try:
            os.makedirs(full, exist_ok=True)
            # The keypoints first (they are checked while written): a clip is never left without its JSON for a
            # pose input that cannot be read.
            with user_errors(NODE):
                count, with_person = save_pose_keypoint_json(frames, os.path.join(full, f"{stem}.json"))
            written.append(f"{stem}.json")
            if images is not None:
                video = InputImpl.VideoFromComponents(Types.VideoComponents(
                    images=images, audio=None, frame_rate=Fraction(fps).limit_denominator(1000)))
                write_whole(os.path.join(full, f"{stem}.mp4"), lambda tmp: video.save_to(
                    tmp, format=Types.VideoContainer.MP4, codec=Types.VideoCodec.H264))
                written.append(f"{stem}.mp4")
        except (*WRITE_ERRORS, av.error.FFmpegError) as e:
            # A pair is written whole or not at all: the JSON of a clip that could not be written goes too.
            for done in written:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(full, done))
            raise ValueError(cannot_write(NODE, "output/" + "/".join(filter(None, [subfolder, stem])) + "*",
                                          e)) from None
        saved = written
        return io.NodeOutput(ui={"pose_keypoints": [{"filename": f, "subfolder": subfolder, "type": "output",
                                                     "frames": count, "frames_with_person": with_person}
                                                    for f in saved]})
