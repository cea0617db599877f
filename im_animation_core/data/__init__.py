"""Training data: synthetic cross-reenactment pairs, real video folders with DWPose keypoints, the Stage-2
augmentations and batching. Every dataset item is a dict with the keys ``PAIR_KEYS`` (see SyntheticPairs)."""

from .augment import AugmentConfig, AugmentedPairs, augment_pair, color_jitter, transform_points, warp_frames
from .collate import collate_pairs
from .pairs import PAIR_KEYS, SyntheticPairs, item_generator
from .video_folder import VIDEO_EXTENSIONS, VideoFolder

__all__ = [
    "PAIR_KEYS", "VIDEO_EXTENSIONS", "AugmentConfig", "AugmentedPairs", "SyntheticPairs", "VideoFolder",
    "augment_pair", "collate_pairs", "color_jitter", "item_generator", "transform_points", "warp_frames",
]
