"""Chunk continuation: a long clip made as a chain of sampler runs, each continuing the previous one.

A chunk asks for the driving frames [offset, offset + length) of the retargeted clip (pixel frames). It is
sampled as one window of the clip's latent frames (windows.Window): a fresh chunk starts at the latent frame
whose last pixel frame is at or before ``offset``; a continued chunk starts at the previous chunk's last latent
frame, held fixed (context 1), exactly as the one-node sampler continues a window, so chained chunks give the
one-node sampler's latents. ``next_offset`` is where the following chunk continues. The chunks' new latent
frames are joined before decoding: Wan's causal VAE decodes a clip's first latent frame as one pixel frame, so
a continued chunk decoded alone would not fit on to the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .frames import TEMPORAL_STRIDE, latent_frame_count
from .windows import Window


@dataclass(frozen=True)
class Chunk:
    window: Window  # latent frames [start, stop) of the clip; context 1 when continuing
    next_offset: int  # the first frame after this chunk: the next chunk's video_frame_offset
    offset: int  # the first new frame, after any adjustment
    notes: tuple[str, ...] = ()  # adjustments made to the inputs, for the log


def last_pixel(latent: int) -> int:
    """The last pixel frame of a latent frame (0 for the first, 4i for latent frame i)."""
    return TEMPORAL_STRIDE * latent


def latent_of(pixel: int) -> int:
    """The latent frame that holds a pixel frame."""
    return 0 if pixel <= 0 else (pixel - 1) // TEMPORAL_STRIDE + 1


def plan_chunk(frames: int, offset: int, length: int, previous_end: int | None = None,
               continued: bool = False) -> Chunk:
    """The chunk of a ``frames``-frame retargeted clip that starts at driving frame ``offset`` and makes
    ``length`` frames (0: to the end of the clip).

    continued: a previous chunk is given; previous_end: the clip latent frame it ended on, when it says so
    (made by IM-Animation Conditioning). A continued chunk must start right after a whole latent frame; an
    offset that does not is moved to the one that does (to where the previous chunk ended, when known)."""
    total = latent_frame_count(frames)
    notes = []
    if offset < 0 or length < 0:
        raise InputError(f"video_frame_offset ({offset}) and length ({length}) must be 0 or more")
    if continued:
        if previous_end is not None:
            want = last_pixel(previous_end) + 1
            if want >= frames:
                raise InputError(f"the previous_chunk already ends on the last of the {frames} frames of the "
                                 "retargeted motion; nothing is left to continue")
            if offset != want:
                notes.append(f"video_frame_offset {offset} does not continue the previous_chunk, which ends on "
                             f"frame {want - 1}; using {want}")
                offset = want
        elif offset < 1:
            raise InputError("a previous_chunk is connected but video_frame_offset is 0: connect the previous "
                             "IM-Animation Conditioning's video_frame_offset output (or the frame its chunk "
                             "ended on, plus 1)")
    if offset >= frames:
        raise InputError(f"video_frame_offset ({offset}) is past the end of the {frames}-frame retargeted motion "
                         f"(frames 0-{frames - 1}): lower it, or retarget a longer driving video")
    if continued:
        start = (offset - 1) // TEMPORAL_STRIDE
        if last_pixel(start) + 1 != offset:
            notes.append(f"video_frame_offset {offset} does not follow a whole latent frame (4 frames each after "
                         f"the first); using {last_pixel(start) + 1}")
            offset = last_pixel(start) + 1
    else:
        start = offset // TEMPORAL_STRIDE
    end = frames - 1 if length == 0 else min(offset + length, frames) - 1
    if length and offset + length > frames:
        notes.append(f"length {length} from frame {offset} runs past the {frames}-frame retargeted motion; "
                     f"making frames {offset}-{frames - 1}")
    stop = min(latent_of(end) + 1, total)
    context = 1 if continued else 0
    if stop - start <= context:  # offset < frames, so only a continued chunk's own frame can be all of it
        stop = min(start + context + 1, total)
    window = Window(start, stop, context, 0)
    return Chunk(window, last_pixel(stop - 1) + 1, offset, tuple(notes))
