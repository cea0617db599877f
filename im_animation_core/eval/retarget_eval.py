"""Joint accuracy and identity leakage of the retargeting stage on held-out synthetic pairs.

The retargeter's heatmap head predicts, per latent frame, where the identity's joints should be; the
ground truth is the same motion rendered on the identity's body. Per latent frame, true joints are the mean
over its pixel frames (what Stage 2 supervises), visible when visible in all of them.
"""

from __future__ import annotations

import torch

from ..data import collate_pairs
from ..frames import clip_to_video, latent_frame_groups, latent_frame_times
from ..heatmaps import heatmap_argmax
from ..tokenizer.encode import encode_clips
from .metrics import identity_leakage, joint_accuracy

# A joint the head places with confidence at or below this counts as missing for the body proportions.
FOUND_CONFIDENCE = 0.1


def pool_joints(xy: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """xy [B,T,J,2], visible [B,T,J] -> per latent frame: mean position [B,F,J,2], visible in all [B,F,J]."""
    groups = latent_frame_groups(xy.shape[1])
    return (torch.stack([xy[:, s:e].mean(1) for s, e in groups], 1),
            torch.stack([visible[:, s:e].all(1) for s, e in groups], 1))


def joint_scores(pred: torch.Tensor, pred_visible: torch.Tensor, found: torch.Tensor, true: torch.Tensor,
                 visible: torch.Tensor, driver: torch.Tensor, driver_visible: torch.Tensor,
                 frame_size: float) -> dict[str, float]:
    """PCK@0.05 / mean error (px) over joints visible in truth and prediction, and identity leakage over the
    joints ``found`` in the prediction. All per latent frame, flattened: xy [N,J,2], masks [N,J] bool;
    frame_size: the frame's longer side in pixels."""
    out = joint_accuracy(pred, true, visible & pred_visible, torch.full((pred.shape[0],), float(frame_size)))
    out.update(identity_leakage(pred, found & visible, true, visible, driver, driver_visible))
    return out


def reference_scores(batch: dict) -> dict[str, dict[str, float]]:
    """The two references a retargeter is compared with, scored like it on a collated batch: copying the
    driver's joints (pose transfer without retargeting) and holding the identity's rest pose (no motion)."""
    true, vis = pool_joints(batch["target_joints"].float(), batch["target_visible"].bool())
    drv, dvis = pool_joints(batch["driving_joints"].float(), batch["driving_visible"].bool())
    rest = batch["identity_joints"].float()[:, None].expand_as(true)
    rest_vis = batch["identity_visible"].bool()[:, None].expand_as(vis)
    size = max(batch["target"].shape[2:4])
    t, v, d, dv = (x.flatten(0, 1) for x in (true, vis, drv, dvis))
    return {name: joint_scores(xy.flatten(0, 1), xv.flatten(0, 1), xv.flatten(0, 1), t, v, d, dv, size)
            for name, (xy, xv) in {"copy driver joints": (drv, dvis), "identity rest pose": (rest, rest_vis)}.items()}


@torch.no_grad()
def retarget_joints(encoder, modules, vae, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted joints [B,F,J,2] (target-frame pixels) and confidence [B,F,J] for a collated batch."""
    driving, identity = batch["driving"], batch["identity"]
    tokens, _ = encode_clips(encoder, driving, trainable=False)
    video = clip_to_video(identity[:, None].float())
    ref = vae.encode(video).float()[:, :, 0]
    rt = modules.retarget
    t = driving.shape[1]
    _, feats = rt(tokens.float(), torch.arange(t, dtype=torch.float32), ref, latent_frame_times(t),
                  return_features=True)
    return heatmap_joints(rt.heatmap_head(feats, rt.grid(ref)).float(), tuple(driving.shape[2:4]))


def heatmap_joints(heat: torch.Tensor, frame_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Retarget heatmaps [B,F,J,Hh,Wh] -> joints [B,F,J,2] in pixels of an HxW frame and confidence [B,F,J]."""
    b, f = heat.shape[:2]
    xy, conf = heatmap_argmax(heat.flatten(0, 1), in_size=frame_hw)
    return xy.view(b, f, -1, 2), conf.view(b, f, -1)


def evaluate_retargeting(encoder, modules, vae, dataset, count: int, batch_size: int = 4,
                         joints: tuple[int, ...] | None = None) -> dict[str, float]:
    """PCK@0.05, mean joint error (px) and identity leakage over the first ``count`` items of ``dataset``.
    joints: score only these joint indices (PCK and error; leakage is then NaN, since the body's proportions
    need the trunk); None: all joints."""
    preds, confs, trues, vis, drivers, dvis = [], [], [], [], [], []
    for start in range(0, count, batch_size):
        batch = collate_pairs([dataset[i] for i in range(start, min(start + batch_size, count))])
        xy, conf = retarget_joints(encoder, modules, vae, batch)
        true, v = pool_joints(batch["target_joints"].float(), batch["target_visible"].bool())
        drv, dv = pool_joints(batch["driving_joints"].float(), batch["driving_visible"].bool())
        for lst, x in ((preds, xy), (confs, conf), (trues, true), (vis, v), (drivers, drv), (dvis, dv)):
            lst.append(x.flatten(0, 1))
    pred, conf, true, v = torch.cat(preds), torch.cat(confs), torch.cat(trues), torch.cat(vis)
    drv, dv = torch.cat(drivers), torch.cat(dvis)
    size = max(dataset[0]["target"].shape[1:3])
    if joints is not None:
        v = v & joint_mask(v.shape[-1], joints)
        return {**joint_accuracy(pred, true, v, torch.full((pred.shape[0],), float(size))),
                "leakage": float("nan"), "d_identity": float("nan"), "d_driver": float("nan")}
    return joint_scores(pred, torch.ones_like(v), conf > FOUND_CONFIDENCE, true, v, drv, dv, size)


def joint_mask(num_joints: int, joints: tuple[int, ...]) -> torch.Tensor:
    """[J] bool, True at ``joints``."""
    mask = torch.zeros(num_joints, dtype=torch.bool)
    mask[list(joints)] = True
    return mask


DRIVER_KEYS = ("driving", "driving_joints", "driving_visible", "driving_face_boxes")


class OtherDriver:
    """The control of a retargeting benchmark: item i of ``dataset`` with the driving clip (frames, joints,
    face boxes) of item (i+1) mod count, its identity and ground truth unchanged. A retargeter that follows
    the driver scores far worse on it than on ``dataset``; one that ignores the driver (a collapsed motion
    encoder, docs/training.md) scores the same."""

    def __init__(self, dataset, count: int):
        self.dataset, self.count = dataset, count

    def __getitem__(self, i: int) -> dict:
        item, other = dict(self.dataset[i]), self.dataset[(i + 1) % self.count]
        item.update({k: other[k] for k in DRIVER_KEYS if k in other})
        return item
