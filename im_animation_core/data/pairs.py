"""SyntheticPairs: motion m rendered on identity A (driving) and on identity B (target, ground truth).

Every item is a dict of tensors (see ``SyntheticPairs``); the same keys come from ``VideoFolder``, so both
can feed one trainer (``torch.utils.data.ConcatDataset`` + ``collate_pairs``).
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch.utils.data import Dataset

from ..synthetic import Identity, Motion, render_rest, render_sample, sample_identity, sample_motion
from ..synthetic.character import MOTION_KINDS
from ..synthetic.sampling import SPLITS, with_min_contrast

PAIR_KEYS = (
    "driving", "driving_joints", "driving_visible", "driving_face_boxes",
    "identity", "identity_joints", "identity_visible",
    "target", "target_joints", "target_visible", "target_face_boxes",
    "expression",
)


def item_generator(*parts) -> torch.Generator:
    """A torch.Generator seeded from the given parts (e.g. seed, split, index) through SHA-256: independent
    streams for different items, identical for identical parts, on every platform."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def as_size(size) -> tuple[int, int]:
    """An int (square) or (height, width) -> (height, width)."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in size)):
        raise ValueError(f"size must be an int or (height, width) of whole pixels >= 8, got {size!r}")
    return int(size[0]), int(size[1])


class SyntheticPairs(Dataset):
    """Cross-reenactment pairs with exact ground truth from the procedural renderer.

    split: "train" or "heldout" (disjoint identity and motion parameters, see synthetic.sampling).
    num_samples: dataset length; frames: T; size: int or (height, width); seed: item i is a pure function
    of (seed, split, same_identity, i).
    same_identity: True gives self-reenactment pairs (B = A: target is the driving clip) for Stage 1.
    thickness_scale: multiplies every drawn identity's limb radii after sampling (1: the split's own bands).
        The 64-pixel demo configs use 1.75, so that limbs are 2-5 pixels wide instead of 1-2: thin
        limbs vanish under the 8x spatial compression of a small VAE. Split membership is decided on the
        sampled (unscaled) values, so train and held-out stay disjoint.
    self_pair_fraction: the share of items that are self-reenactment pairs (B = A) although same_identity is
        False, drawn per item from its own generator (the other items are unchanged). The paper's Stage 2 trains
        on augmented self-reenactment clips beside the cross-identity pairs: there the target is the driver's
        own pose, which teaches the retargeter to read the motion tokens before it has to re-proportion them.
    kind_weights: {motion kind: weight} to draw item i's motion kind from, with a generator of its own (the
        other motion parameters are drawn as without it); None: the generator's own uniform draw, so every
        existing dataset is unchanged. A training continuation can give a family that fails more weight.
    min_contrast: every drawn identity's shirt, trousers, skin and hair are recoloured (hue kept) to differ in
        luma from the background by at least this much (0: the generator's own colours; see
        synthetic.sampling.with_min_contrast). The 128-pixel demo domain uses it so that limbs survive the VAE.

    Item i (float32 frames in [0,1], joints in pixels, integer = pixel centre, keypoints.JOINT_NAMES layout):
        driving [T,H,W,3]: motion m on identity A; driving_joints [T,62,2]; driving_visible [T,62] bool;
        driving_face_boxes [T,4] (x0, y0, x1, y1);
        identity [H,W,3]: identity B in the rest pose (one frame); identity_joints [62,2]; identity_visible [62];
        target [T,H,W,3]: motion m on identity B (ground truth); target_joints [T,62,2]; target_visible [T,62];
        target_face_boxes [T,4];
        expression [T,2]: the driving clip's (mouth openness, eye openness) per frame, in [0,1].
    Joint coordinates are the true positions also for joints outside the frame (visible False there).
    """

    def __init__(self, split: str = "train", num_samples: int = 1000, frames: int = 16, size=64, seed: int = 0,
                 same_identity: bool = False, thickness_scale: float = 1.0, min_contrast: float = 0.0,
                 self_pair_fraction: float = 0.0, kind_weights: dict[str, float] | None = None):
        if not 0 <= self_pair_fraction <= 1:
            raise ValueError(f"self_pair_fraction must be in [0, 1], got {self_pair_fraction!r}")
        if not thickness_scale > 0:
            raise ValueError(f"thickness_scale must be > 0, got {thickness_scale!r}")
        if not 0 <= min_contrast <= 0.5:
            raise ValueError(f"min_contrast must be in [0, 0.5] (a luma difference), got {min_contrast!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if kind_weights is not None:
            bad = {k: w for k, w in kind_weights.items() if k not in MOTION_KINDS or not float(w) >= 0}
            if bad or not sum(map(float, kind_weights.values())) > 0:
                raise ValueError(f"kind_weights must map motion kinds of {MOTION_KINDS} to weights >= 0, not all 0; "
                                 f"got {kind_weights!r}")
        if num_samples < 0 or frames < 1:
            raise ValueError(f"need num_samples >= 0 and frames >= 1, got {num_samples}, {frames}")
        self.split, self.num_samples, self.frames = split, int(num_samples), int(frames)
        self.size = as_size(size)
        self.seed, self.same_identity = int(seed), bool(same_identity)
        self.thickness_scale = float(thickness_scale)
        self.min_contrast = float(min_contrast)
        self.self_pair_fraction = float(self_pair_fraction)
        self.kind_weights = None if kind_weights is None else {k: float(w) for k, w in kind_weights.items()}

    def __len__(self) -> int:
        return self.num_samples

    def parameters(self, index: int) -> tuple[Identity, Identity, Motion]:
        """(identity A of the driving clip, identity B of the identity image / target, motion) of item index."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        g = item_generator("pairs", self.seed, self.split, int(self.same_identity), index)
        a = self._styled(sample_identity(g, self.split))
        b = a if self.same_identity else self._styled(sample_identity(g, self.split))
        motion = sample_motion(g, self.split, self.motion_kind(index))
        return a, (a if self.is_self_pair(index) else b), motion

    def motion_kind(self, index: int) -> str | None:
        """Item index's motion kind drawn from kind_weights, or None (sample_motion draws it) without them."""
        if self.kind_weights is None:
            return None
        kinds = list(self.kind_weights)
        weights = torch.tensor([self.kind_weights[k] for k in kinds], dtype=torch.float64)
        draw = torch.multinomial(weights, 1, generator=item_generator("kind", self.seed, self.split, index))
        return kinds[int(draw)]

    def is_self_pair(self, index: int) -> bool:
        """Whether item index is a self-reenactment pair (same_identity, or drawn by self_pair_fraction)."""
        if self.same_identity or self.self_pair_fraction <= 0:
            return self.same_identity
        draw = torch.rand((), generator=item_generator("self_pair", self.seed, self.split, index))
        return bool(draw < self.self_pair_fraction)

    def _styled(self, identity: Identity) -> Identity:
        identity = with_min_contrast(identity, self.min_contrast)
        if self.thickness_scale == 1.0:
            return identity
        s = self.thickness_scale
        return dataclasses.replace(identity, thickness=identity.thickness * s, leg_thickness=identity.leg_radius * s)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a, b, motion = self.parameters(index)
        h, w = self.size
        drv = render_sample(a, motion, self.frames, h, w)
        tgt = drv if b is a else render_sample(b, motion, self.frames, h, w)
        rest = render_rest(b, h, w)
        return {
            "driving": drv.frames, "driving_joints": drv.joints, "driving_visible": drv.visible,
            "driving_face_boxes": drv.face_boxes,
            "identity": rest.frames[0], "identity_joints": rest.joints[0], "identity_visible": rest.visible[0],
            "target": tgt.frames, "target_joints": tgt.joints, "target_visible": tgt.visible,
            "target_face_boxes": tgt.face_boxes,
            "expression": drv.expression,
        }
