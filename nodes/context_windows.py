"""A model patched by Apply IM-Animation under the host's context windows (WAN Context Windows /
Context Windows (Manual), comfy.context_windows).

The host's handler cuts the sampled latent [B,C,R+F,h,w] (R identity frames, then F video latent frames) and
every conditioning tensor of that length into windows along dim 2. Left alone it would give every window after
the first a slice without the identity, and would not cut the expression tokens ([B,F,K,W], one row per video
frame). For the length of one sampling run (an outer-sample wrapper), the handler is replaced by a copy that:
- lays its windows over the video frames with the host's own schedule, then puts the identity frames first in
  each (windows.reference_anchored): the latent, motion (``c_concat``) and noise mask of every window are then
  sliced by the host like any other, and each window starts from the identity as in training;
- slices the expression tokens to the window's video frames (a resize-cond callback);
- fuses the windows' predictions over the video frames with the host's weights, and takes the identity frames'
  prediction (which the noise mask replaces by the identity anyway) from each window alike;
- shuffles FreeNoise over the video frames only (v0.33 and later);
- keeps its windows within the modules' training length and refuses an overlap that leaves no window
  (windows.context_window_sizes).
"""

from __future__ import annotations

import copy
import logging

import comfy.patcher_extension
import torch

from ..im_animation_core.errors import InputError
from ..im_animation_core.frames import latent_frame_count
from ..im_animation_core.injection import REFERENCE_FRAMES
from ..im_animation_core.windows import context_window_sizes, reference_anchored

try:
    import comfy.context_windows as host_windows
except ImportError:  # a host without context windows: nothing to adapt
    host_windows = None

log = logging.getLogger(__name__)

CALLBACK_KEY = "im_animation"
WAN_TIME_DIM = 2  # Wan latents are [B,C,F,h,w]


def _frames(latent: int) -> int:
    return 4 * (latent - 1) + 1


class _ReferenceAnchored:
    """Mixed into a copy of the host's IndexListContextHandler (module doc)."""

    ima_reference = REFERENCE_FRAMES

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        video = x_in.size(self.dim) - self.ima_reference
        if video > self.context_length:
            log.info("IM-Animation: context windows of %d latent frames (overlap %d) over %d video latent frames, "
                     "each starting from the identity", self.context_length, self.context_overlap, video)
            return True
        return False

    def _ima_windows(self, num_frames: int, handler, model_options) -> list[list[int]]:
        video = self.ima_schedule.func(num_frames - self.ima_reference, handler, model_options)
        return reference_anchored(video, self.ima_reference)

    def combine_context_window_results(self, x_in, sub_conds_out, sub_conds, window, window_idx, total_windows,
                                       timestep, conds_final, counts_final, biases_final):
        r, d = self.ima_reference, self.dim
        n = x_in.shape[d] - r
        video = copy.copy(window)
        video.index_list = [i - r for i in window.index_list[r:]]
        video.context_length = len(video.index_list)
        biases = [b[r:] for b in biases_final]
        super().combine_context_window_results(
            x_in.narrow(d, r, n), [o.narrow(d, r, o.shape[d] - r) for o in sub_conds_out], sub_conds, video,
            window_idx, total_windows, timestep, [c.narrow(d, r, n) for c in conds_final],
            [c.narrow(d, r, n) for c in counts_final], biases)
        for full, part in zip(biases_final, biases, strict=True):
            full[r:] = part
        relative = self.fuse_method.name == host_windows.ContextFuseMethods.RELATIVE
        for out, final, counts in zip(sub_conds_out, conds_final, counts_final, strict=True):
            if relative:  # the relative fuse keeps a running average: counts stay 1
                final.narrow(d, 0, r).copy_(out.narrow(d, 0, r))
            else:
                final.narrow(d, 0, r).add_(out.narrow(d, 0, r))
                counts.narrow(d, 0, r).add_(1.0)

    def _apply_freenoise(self, noise, conds, seed):
        r = self.ima_reference
        host_windows.apply_freenoise(noise.narrow(self.dim, r, noise.shape[self.dim] - r), self.dim,
                                     self.context_length, self.context_overlap, seed)
        return noise


_CLASSES: dict[type, type] = {}


def _expression_slicer(reference: int):
    from .wan_patch import EXPRESSION_COND

    def resize(cond_key, cond_value, window, x_in, device, cond_item):
        if cond_key != EXPRESSION_COND or not isinstance(getattr(cond_value, "cond", None), torch.Tensor):
            return None
        rows = [i - reference for i in window.index_list if i >= reference]
        return cond_value._copy_with(cond_value.cond[:, rows].to(device))

    return resize


def _copy_callbacks(callbacks: dict) -> dict:
    return {k: _copy_callbacks(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
            for k, v in callbacks.items()}


def anchored_handler(handler, clip_frames: int):
    """A copy of the host's context handler set up for a patched model (module doc); None when ``handler`` is
    none the pack knows (it is then left as it is). Raises InputError on settings that cannot work."""
    if host_windows is None or not isinstance(handler, host_windows.IndexListContextHandler) \
            or isinstance(handler, _ReferenceAnchored):
        return None
    if handler.dim != WAN_TIME_DIM:
        raise InputError(f"the context windows run over dim {handler.dim}, but a Wan video latent's frames are dim "
                         f"{WAN_TIME_DIM}: use the WAN Context Windows node, or set dim to {WAN_TIME_DIM}")
    batched = handler.context_schedule.name == host_windows.ContextSchedules.BATCHED
    train = latent_frame_count(clip_frames)
    length, overlap, notes = context_window_sizes(handler.context_length, handler.context_overlap, train,
                                                  uses_overlap=not batched)
    for note in notes:
        log.warning("Apply IM-Animation: %s (%d video frames; docs/long_clips.md).", note, _frames(length))
    cls = _CLASSES.get(type(handler))
    if cls is None:
        cls = _CLASSES[type(handler)] = type(f"IMAnimation{type(handler).__name__}",
                                             (_ReferenceAnchored, type(handler)), {})
    out = object.__new__(cls)
    out.__dict__.update(handler.__dict__)
    out.context_length, out.context_overlap = length, overlap
    out.ima_schedule = handler.context_schedule
    out.context_schedule = host_windows.ContextSchedule(handler.context_schedule.name, out._ima_windows)
    out.callbacks = _copy_callbacks(handler.callbacks)
    comfy.patcher_extension.add_callback_with_key(host_windows.IndexListCallbacks.RESIZE_COND_ITEM, CALLBACK_KEY,
                                                  _expression_slicer(out.ima_reference), out.callbacks)
    return out
