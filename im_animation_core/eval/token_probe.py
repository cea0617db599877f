"""How much of the driver's own pose the frozen motion tokens carry: a Stage-1 heatmap head decodes each driving
frame's joints from its tokens, scored like make eval's retargeting rows (PCK@0.05 of the frame side, mean error
in pixels, visible joints). The retargeter reads the same tokens, so this is a rough ceiling for what it can place
without the identity image's help."""

from __future__ import annotations

import torch
from einops import rearrange

from ..data import collate_pairs
from ..heatmaps import heatmap_argmax
from ..tokenizer.encode import encode_clips
from .metrics import joint_accuracy
from .retarget_eval import joint_mask


@torch.no_grad()
def token_pose_probe(encoder, head, dataset, count: int, joints: tuple[int, ...] | None = None,
                     batch_size: int = 4) -> dict[str, float]:
    """{"pck", "mean_error_px"} of ``head`` (a HeatmapHead reading the tokens of ``encoder``, a
    train.encoders.TokenizerEncoder) on the driving clips of the first ``count`` items of ``dataset``
    (SyntheticPairs items), every pixel frame against its own driving joints; joints: only these joint
    indices (None: all)."""
    xy_all, true_all, vis_all = [], [], []
    for start in range(0, count, batch_size):
        batch = collate_pairs([dataset[i] for i in range(start, min(start + batch_size, count))])
        tokens, _ = encode_clips(encoder, batch["driving"], False)
        size = tuple(batch["driving"].shape[2:4])
        xy, _ = heatmap_argmax(head(rearrange(tokens, "b t l c -> (b t) l c")).float(), in_size=size)
        xy_all.append(xy)
        true_all.append(rearrange(batch["driving_joints"], "b t j c -> (b t) j c").float())
        vis_all.append(rearrange(batch["driving_visible"], "b t j -> (b t) j").bool())
    xy, true, vis = torch.cat(xy_all), torch.cat(true_all), torch.cat(vis_all)
    if joints is not None:
        vis = vis & joint_mask(vis.shape[-1], joints)
    side = float(max(dataset[0]["driving"].shape[1:3]))
    return joint_accuracy(xy, true, vis, torch.full((xy.shape[0],), side))
