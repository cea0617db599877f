"""Load Driving Video (path): decord-based reading with seek, stride and resize on decode."""

from comfy_api.latest import io

from ..im_animation_core.video import read_video
from . import types
from .errors import user_errors


class LoadDrivingVideoPath(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_LoadDrivingVideoPath",
            display_name="Load Driving Video (path)",
            category=types.CATEGORY,
            description="Reads a driving video from a file path with decord, decoding only the frames it keeps "
                        "(useful for long clips). Outputs frames and their fps for Encode Driving Video.",
            inputs=[
                io.String.Input("path", default="", tooltip="Full path of a video file (mp4, mov, webm, ...)."),
                io.Int.Input("start_frame", default=0, min=0, max=10_000_000,
                             tooltip="First source frame to read."),
                io.Int.Input("stride", default=1, min=1, max=64, tooltip="Keep every n-th frame."),
                io.Int.Input("max_frames", default=0, min=0, max=100000,
                             tooltip="Read at most this many frames; 0 reads to the end."),
                io.Int.Input("width", default=0, min=0, max=8192, step=8,
                             tooltip="Resize frames on decode to this width; 0 keeps the source size."),
                io.Int.Input("height", default=0, min=0, max=8192, step=8,
                             tooltip="Resize frames on decode to this height; 0 keeps the source size."),
            ],
            outputs=[io.Image.Output(display_name="frames"), io.Float.Output(display_name="fps")],
        )

    @classmethod
    def execute(cls, path, start_frame, stride, max_frames, width, height) -> io.NodeOutput:
        node = "Load Driving Video (path)"
        if bool(width) != bool(height):
            raise ValueError(f"{node}: set both width and height to resize, or both to 0 to keep the size.")
        with user_errors(node):
            clip = read_video(path.strip(), stride=stride, max_frames=max_frames or None, start=start_frame,
                              size=(height, width) if width else None)
        return io.NodeOutput(clip.frames, clip.fps)
