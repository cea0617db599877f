"""Procedural articulated 2D characters: the same motion rendered on any identity (exact cross-reenactment
ground truth). character.py: Identity, Motion, forward kinematics; render.py: rasterisation; sampling.py:
seeded random identities and motions with disjoint train / held-out parameter ranges."""

from .character import (
    MOTION_CHANNELS,
    MOTION_KINDS,
    Identity,
    Motion,
    expression_from_curves,
    skeleton,
)
from .render import RenderedClip, render, render_clip, render_rest, render_sample
from .sampling import (
    SPLIT_RANGES,
    SPLITS,
    identity_split_values,
    in_split,
    motion_split_values,
    sample_identity,
    sample_motion,
    split_of,
)

__all__ = [
    "MOTION_CHANNELS", "MOTION_KINDS", "SPLITS", "SPLIT_RANGES", "Identity", "Motion", "RenderedClip",
    "expression_from_curves", "identity_split_values", "in_split",
    "motion_split_values", "render", "render_clip", "render_rest", "render_sample", "sample_identity",
    "sample_motion", "skeleton", "split_of",
]
