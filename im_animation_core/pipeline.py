"""The inference steps between the nodes, on plain tensors (no ComfyUI objects)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError
from .expression import crop_faces
from .frames import latent_frame_count, latent_frame_times, latent_to_pixel_frames, pool_to_latent_frames, valid_length
from .heatmaps import heatmap_argmax
from .keypoints import face_boxes_from_joints, fallback_face_boxes, keypoints_from_pose_frames
from .modules import IMAnimationModules


@dataclass
class RetargetedMotion:
    """Driving motion moved onto the identity's body, aligned to the output latent grid.

    motion: [1,C_r,F_lat,h,w] float32 (F_lat = (length-1)//4+1 output latent frames).
    identity_latent: [1,C_lat,1,h,w] float32 raw VAE latent of the identity image (the TI2V first frame).
    length: output frames (4k+1); width, height: output size in pixels; fps: of the driving frames used.
    modules: handle of the IM-Animation modules that made it (in ComfyUI their ModelPatcher); the sampler
        takes the DiT-side modules from it.
    keypoints: optional [length,J,2] float32, where the retargeter puts the identity's joints in each output
        frame: (x, y) in pixels of the width x height output frame (the identity image as the retargeter saw
        it, centre-cropped and resized; integer values at pixel centres), in the J = 62 layout of
        keypoints.py. Read from the retargeter's heatmap head (retarget_with_keypoints); None when not made.
    keypoint_confidence: optional [length,J] float32, the heatmap peak of each joint: about 1 where the head
        sees the joint, about 0 where it does not (the heatmaps it was trained on are 1 at visible joints and
        all 0 for hidden ones); not clamped. Present exactly when keypoints is.
    """

    motion: torch.Tensor
    identity_latent: torch.Tensor
    length: int
    width: int
    height: int
    fps: float
    modules: object
    keypoints: torch.Tensor | None = None
    keypoint_confidence: torch.Tensor | None = None


@dataclass
class ExpressionFeatures:
    """tokens: [T,K,W] float32 expression tokens of T driving frames; modules: handle of the modules that
    made them (in ComfyUI their ModelPatcher)."""

    tokens: torch.Tensor
    modules: object

    def for_length(self, length: int) -> torch.Tensor:
        """[F_lat,K,W] tokens averaged over each latent frame of the first ``length`` frames."""
        if self.tokens.shape[0] < length:
            raise InputError(f"expression features cover {self.tokens.shape[0]} frames but the video has {length}: "
                             "encode the expression of the same driving frames as the motion")
        return pool_to_latent_frames(self.tokens[:length])


def resolve_length(requested: int, available: int) -> int:
    """Output length: ``requested`` (0 = as many driving frames as there are), rounded down to 4k+1."""
    if available < 1:
        raise InputError("the driving clip has no frames: connect a video with at least one frame")
    if requested > available:
        raise InputError(f"length {requested} asks for more frames than the driving clip has ({available}): "
                         f"lower length to {valid_length(available)} or less, or use a longer clip (0 = whole clip)")
    return valid_length(requested or available)


def retarget_segments(length: int, clip_frames: int) -> list[tuple[int, int]]:
    """[start, stop) pixel-frame ranges that retarget a clip of ``length`` (4k+1) frames piece by piece, each
    at most ``clip_frames`` (4k+1) long and laid out like a training clip: its first latent frame is one
    pixel frame, the last pixel frame of the previous segment's last latent frame. Each segment after the
    first therefore adds its latent frames 1.. to the output; its first latent frame is context only."""
    if length <= clip_frames:
        return [(0, length)]
    out, start = [(0, clip_frames)], clip_frames - 1
    while start < length - 1:
        out.append((start, min(start + clip_frames, length)))
        start = out[-1][1] - 1
    return out


@torch.no_grad()
def retarget(modules: IMAnimationModules, tokens: torch.Tensor, identity_latent: torch.Tensor,
             length: int, clip_frames: int | None = None) -> torch.Tensor:
    """tokens: [T,N_m,C_m] (T >= length); identity_latent: [1,C,1,h,w] or [1,C,h,w]; clip_frames: the
    longest piece retargeted at once (None: the modules' training clip length, modules.clip_frames).
    Returns the retargeted motion [1,C_r,F_lat,h,w] float32 on the modules' device.

    The retargeting transformer attends over every driving frame it is given, with sinusoidal frame times;
    given a clip far longer than its training clips it sees times and sequence lengths it never saw, and its
    output drifts further from the truth frame by frame (docs/results.md, "Long clips"). Longer clips are
    therefore retargeted in training-length segments (retarget_segments), each with times from 0."""
    return _retarget(modules, tokens, identity_latent, length, clip_frames, None)[0]


@torch.no_grad()
def retarget_with_keypoints(modules: IMAnimationModules, tokens: torch.Tensor, identity_latent: torch.Tensor,
                            length: int, frame_size: tuple[int, int], clip_frames: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """retarget(), and where the retargeter puts the identity's joints: the same transformer pass also runs
    its heatmap head (the Stage-2 supervision head, what eval/retarget_eval.py scores).

    frame_size: (height, width) in pixels of the output frame the identity latent encodes.
    Returns (motion [1,C_r,F_lat,h,w] float32 on the modules' device, keypoints [length,J,2] float32 (x, y)
    pixels of that frame, confidence [length,J] float32 heatmap peaks), both on the CPU; see RetargetedMotion.

    The head predicts one pose per latent frame, trained on the mean of its pixel frames' joints; each pixel
    frame gets the blend of the two nearest latent frames' poses by time (frames.latent_to_pixel_frames),
    weighted by their confidences so that a joint the head loses in one latent frame is not pulled towards
    wherever that frame's empty heatmap peaks."""
    motion, xy, conf = _retarget(modules, tokens, identity_latent, length, clip_frames, frame_size)
    weight = conf.clamp(min=0)[..., None]
    return (motion, latent_to_pixel_frames(xy, length, weight),
            latent_to_pixel_frames(conf, length))


def _retarget(modules: IMAnimationModules, tokens: torch.Tensor, identity_latent: torch.Tensor, length: int,
              clip_frames: int | None, frame_size: tuple[int, int] | None):
    """(motion [1,C_r,F_lat,h,w], joints [F_lat,J,2] | None, confidence [F_lat,J] | None): the joints only
    when frame_size (H, W) is given. Arguments as retarget_with_keypoints."""
    p = next(modules.parameters())
    ref = (identity_latent[:, :, 0] if identity_latent.ndim == 5 else identity_latent).to(p)
    rt = modules.retarget
    pieces, joints, confidences = [], [], []
    for i, (a, b) in enumerate(retarget_segments(length, clip_frames or modules.clip_frames)):
        n = b - a
        out, feats = rt(tokens[a:b].to(p)[None], torch.arange(n, dtype=torch.float32), ref,
                        latent_frame_times(n), return_features=True)
        # A later segment's first latent frame is context only (retarget_segments).
        keep = slice(None) if i == 0 else slice(1, None)
        pieces.append(out[:, :, keep])
        if frame_size is not None:
            heat = rt.heatmap_head(feats[:, keep], rt.grid(ref))[0].float()  # [F,J,Hh,Wh]
            xy, conf = heatmap_argmax(heat, in_size=tuple(frame_size))
            joints.append(xy.cpu())
            confidences.append(conf.cpu())
    out = torch.cat(pieces, dim=2)
    assert out.shape[2] == latent_frame_count(length)
    if frame_size is None:
        return out.float(), None, None
    return out.float(), torch.cat(joints), torch.cat(confidences)


@torch.no_grad()
def encode_expression(modules: IMAnimationModules, frames: torch.Tensor, boxes: torch.Tensor | None = None,
                      chunk: int = 64) -> torch.Tensor:
    """frames: [T,H,W,3] float in [0,1]; boxes: [T,4] face boxes (x0,y0,x1,y1 pixels) or None for the
    fallback box. Returns [T,K,W] float32 expression tokens on the CPU."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"driving frames have shape {tuple(frames.shape)}; expected [N,H,W,3] RGB frames")
    if frames.shape[0] == 0:
        raise InputError("the driving frames are empty: connect a video with at least one frame")
    if boxes is None:
        boxes = fallback_face_boxes(frames.shape[0], frames.shape[1], frames.shape[2])
    p = next(modules.parameters())
    size = modules.expression_encoder.config.crop_size
    out = []
    for i in range(0, frames.shape[0], chunk):
        crops = crop_faces(frames[i:i + chunk].to(p.device), boxes[i:i + chunk].to(p.device), size)
        out.append(modules.expression_encoder(crops.to(p.dtype)).float().cpu())
    return torch.cat(out)


def face_boxes(pose_frames: list, width: int, height: int) -> torch.Tensor:
    """Face boxes [T,4] (x0,y0,x1,y1 pixels) from POSE_KEYPOINT frames, by the rule of the training data
    (keypoints.face_boxes_from_joints)."""
    xy, visible = keypoints_from_pose_frames(pose_frames, width, height)
    return face_boxes_from_joints(xy, visible, height, width)
