"""Load Driving Video (path): decord-based reading with seek, stride and resize on decode.

The file comes from the input folder's video picker (with upload, like the stock Load Video), or from a
path confined to the allowed folders (nodes.allowed_folders), since a server on a network takes paths from
anyone who reaches it."""

import os

import folder_paths
from comfy_api.latest import io

from ..im_animation_core.errors import InputError
from ..im_animation_core.video import read_video
from . import types
from .allowed_folders import file_fingerprint, readable_file, shown_name
from .errors import user_errors

NODE = "Load Driving Video (path)"
# Largest resize on decode: 4K frames; the pipeline itself works far below this (the motion tokenizer's input
# size, a Wan output of at most 1280x720).
MAX_SIZE = 4096
MAX_FRAMES = 10_000


def input_videos() -> list[str]:
    folder = folder_paths.get_input_directory()
    try:
        files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    except OSError:
        return []
    return sorted(folder_paths.filter_files_content_types(files, ["video"]))


def chosen_file(video: str, path: str) -> str:
    """The real path of the file to read: ``path`` when given (relative to the input folder), else the picked
    ``video``. Raises InputError (one message for every refusal) outside the allowed folders."""
    given = (path or "").strip()
    if given:
        return readable_file(given, folder_paths.get_input_directory(), "Video file")
    if not isinstance(video, str) or not video:
        raise InputError("no video chosen: pick a video in 'video' (or upload one), or give a path in 'path'.")
    name, base = folder_paths.annotated_filepath(video)
    return readable_file(name, base or folder_paths.get_input_directory(), "Video file")


class LoadDrivingVideoPath(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_LoadDrivingVideoPath",
            display_name=NODE,
            category=types.CATEGORY,
            description="Reads a driving video with decord, decoding only the frames it keeps (useful for long "
                        "clips): the video picked from the input folder, or the file at 'path' inside ComfyUI's "
                        "input, output or temp folder. Outputs frames and their fps for Encode Driving Video.",
            inputs=[
                io.Combo.Input("video", options=input_videos(), upload=io.UploadType.video,
                               tooltip="A video in ComfyUI's input folder (upload one with the button). Used "
                                       "when 'path' is empty."),
                io.String.Input("path", default="",
                                tooltip="Optional: a video file inside ComfyUI's input, output or temp folder "
                                        "(relative to the input folder, or absolute), or a folder the server's "
                                        "owner allowed (docs/security.md). Overrides 'video' when set."),
                io.Int.Input("start_frame", default=0, min=0, max=10_000_000,
                             tooltip="First source frame to read."),
                io.Int.Input("stride", default=1, min=1, max=64, tooltip="Keep every n-th frame."),
                io.Int.Input("max_frames", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Read at most this many frames; 0 reads to the end (within the decoding "
                                     "limit of frames x pixels, docs/security.md)."),
                io.Int.Input("width", default=0, min=0, max=MAX_SIZE, step=8,
                             tooltip="Resize frames on decode to this width; 0 keeps the source size. Decoding "
                                     "at the size the next node needs keeps long or large clips in memory."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIZE, step=8,
                             tooltip="Resize frames on decode to this height; 0 keeps the source size."),
            ],
            outputs=[io.Image.Output(display_name="frames"), io.Float.Output(display_name="fps")],
        )

    @classmethod
    def validate_inputs(cls, video, path):
        # Taking 'video' here skips the host's "value in list" check, so that a path alone is enough (and an
        # empty input folder does not block the node); execute() confines whatever is given.
        return True

    @classmethod
    def fingerprint_inputs(cls, video, path, **kwargs):
        # Re-run when the file changes (a re-upload under the same name), as the stock Load Video does.
        return file_fingerprint(lambda: chosen_file(video, path))

    @classmethod
    def execute(cls, video, path, start_frame, stride, max_frames, width, height) -> io.NodeOutput:
        if bool(width) != bool(height):
            raise ValueError(f"{NODE}: set both width and height to resize, or both to 0 to keep the size.")
        with user_errors(NODE):
            real = chosen_file(video, path)
            clip = read_video(real, stride=stride, max_frames=max_frames or None, start=start_frame,
                              size=(height, width) if width else None, name=shown_name(real))
        return io.NodeOutput(clip.frames, clip.fps)
