"""Helpers of tools/demo.py: the held-out demo pair, writing its input files, the strip files, the joint
metrics of the trained retargeter and the metrics as Markdown (the image metrics against the exact ground truth
are im_animation_core.eval.video_rows)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from im_animation_core.data import SyntheticPairs
from im_animation_core.eval.strip import contact_sheet, side_by_side

# The demo clip: held-out pair DEMO_INDEX of seed DEMO_SEED (identity and motion never seen in training). A
# dance, a thin pink driver and a broad blue identity: the body shapes differ plainly.
DEMO_SEED = 2026
DEMO_INDEX = 21
DEMO_FRAMES = 17
# The demo domain, the one place make demo, make eval and their helpers take it from: the data of the demo
# model set's training (configs/demo128/*.json: SyntheticPairs size, thickness_scale and min_contrast) and the
# flow shift its Stage 3 trained at (the demo workflow's ModelSamplingSD3; stock Wan models default to 8).
DEMO_SIZE = 128
DEMO_THICKNESS_SCALE = 2.0
DEMO_MIN_CONTRAST = 0.3
DEMO_SHIFT = 3.0
STRIP_LABELS = ("driving", "identity", "result", "ground truth")
STRIP_SCALE = 3
STRIP_FPS = 12  # the strip plays at half the driving clip's 24 fps, to be watchable


def demo_pairs(split: str, count: int, seed: int, frames: int = DEMO_FRAMES) -> SyntheticPairs:
    """``count`` pairs of ``split`` and ``seed`` in the demo domain (DEMO_SIZE, DEMO_THICKNESS_SCALE,
    DEMO_MIN_CONTRAST), of ``frames`` frames."""
    return SyntheticPairs(split, num_samples=count, frames=frames, size=DEMO_SIZE, seed=seed,
                          thickness_scale=DEMO_THICKNESS_SCALE, min_contrast=DEMO_MIN_CONTRAST)


def demo_pair() -> dict[str, torch.Tensor]:
    """The demo's SyntheticPairs item (keys and shapes in SyntheticPairs' docstring)."""
    data = demo_pairs("heldout", DEMO_INDEX + 1, DEMO_SEED)
    item = data[DEMO_INDEX]
    item["motion_kind"] = data.parameters(DEMO_INDEX)[2].kind
    return item


def long_demo_pair(frames: int) -> dict[str, torch.Tensor]:
    """The demo's held-out pair drawn ``frames`` frames long (the long-clip workflow's input and ground truth)."""
    return demo_pairs("heldout", DEMO_INDEX + 1, DEMO_SEED, frames=frames)[DEMO_INDEX]


def write_pair_inputs(input_dir: Path, item: dict, identity_name: str, driving_name: str) -> None:
    """The identity PNG and the driving mp4 (24 fps) under the names the demo workflow loads."""
    from tools.media import write_video

    input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(item["identity"])).save(input_dir / identity_name)
    write_video(input_dir / driving_name, item["driving"], fps=24.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_strip(out: Path, item: dict, result: torch.Tensor, random_weights: bool = False) -> dict[str, Path]:
    """strip.gif (looping), strip.mp4 and strip.png (contact sheet) under out; returns their paths.
    random_weights: label the result panel as made by random weights."""
    from tools.media import write_video

    panels = [item["driving"], item["identity"], result, item["target"]]
    labels = list(STRIP_LABELS)
    if random_weights:
        labels[2] = "result (RANDOM weights)"
    frames = side_by_side(panels, labels, scale=STRIP_SCALE)  # uint8 [T,H',W',3]
    paths = {k: out / f"strip.{k}" for k in ("gif", "mp4", "png")}
    images = [Image.fromarray(f.numpy()) for f in frames]
    images[0].save(paths["gif"], save_all=True, append_images=images[1:], duration=round(1000 / STRIP_FPS),
                   loop=0, disposal=1)
    even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # yuv420p wants even sides
    write_video(paths["mp4"], even.float() / 255, fps=STRIP_FPS)
    sheet, _ = contact_sheet(panels, labels, columns=5, scale=2)
    Image.fromarray(sheet.numpy()).save(paths["png"])
    return paths


def load_trained(tokenizer: Path, modules: Path, vae: Path):
    """(encoder, modules, VAE) in eval mode, as lab/eval.py builds them."""
    from im_animation_core.tokenizer import MotionTokenizer
    from im_animation_core.train.encoders import TokenizerEncoder
    from im_animation_core.train.modules_file import load_modules
    from im_animation_core.wan.vae import load_wan_vae

    encoder = TokenizerEncoder(MotionTokenizer.from_file(tokenizer)).eval()
    return encoder, load_modules(str(modules)).eval(), load_wan_vae(vae).eval()


def joint_metrics(item: dict, encoder, modules, vae) -> dict[str, dict[str, float]]:
    """PCK@0.05, mean joint error (px) and identity leakage per latent frame of the clip: the retargeter's
    joints, and the references of lab/eval.py (copying the driver's joints, the identity's rest pose)."""
    from im_animation_core.data import collate_pairs
    from im_animation_core.eval.retarget_eval import (
        FOUND_CONFIDENCE,
        joint_scores,
        pool_joints,
        reference_scores,
        retarget_joints,
    )

    batch = collate_pairs([{k: v for k, v in item.items() if isinstance(v, torch.Tensor)}])
    true, vis = pool_joints(batch["target_joints"].float(), batch["target_visible"].bool())
    drv, dvis = pool_joints(batch["driving_joints"].float(), batch["driving_visible"].bool())
    xy, conf = retarget_joints(encoder, modules, vae, batch)
    t, v, d, dv = (x.flatten(0, 1) for x in (true, vis, drv, dvis))
    model = joint_scores(xy.flatten(0, 1), torch.ones_like(v), (conf > FOUND_CONFIDENCE).flatten(0, 1), t, v, d, dv,
                         max(batch["target"].shape[2:4]))
    return {"IM-Animation retargeting": model, **reference_scores(batch)}


def _f(x: float, digits: int) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_tables(metrics: dict) -> str:
    """The metrics.json content as Markdown tables."""
    img = metrics["image"]
    clip = metrics["clip"]
    lines = [f"Clip: held-out pair {clip['index']} (seed {clip['seed']}, {clip['motion']}), {img['frames_compared']} "
             f"frames of {clip['size']}x{clip['size']}, thickness_scale {clip['thickness_scale']}, min_contrast "
             f"{clip['min_contrast']}; weights: {metrics['weights']}", ""]
    lines += [f"Note: {n}" for n in img["notes"]] + ([""] if img["notes"] else [])
    lines += ["| vs ground truth | PSNR (dB) | SSIM | motion correlation |", "|---|---|---|---|"]
    lines += [f"| {name} | {_f(m['psnr'], 2)} | {_f(m['ssim'], 3)} | {_f(m['motion_corr'], 3)} |"
              for name, m in img["rows"].items()]
    lines.append("(motion correlation: of each clip's changes over time with the ground truth's; 0 = still)")
    lines.append("")
    if metrics["joints"] is None:
        lines.append(f"Joint metrics: {metrics['joints_note']}")
    else:
        lines += ["| joints per latent frame | PCK@0.05 | mean error (px) | leakage | d_identity | d_driver |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {_f(m['pck'], 3)} | {_f(m['mean_error_px'], 2)} | {_f(m['leakage'], 3)} | "
                  f"{_f(m['d_identity'], 3)} | {_f(m['d_driver'], 3)} |" for name, m in metrics["joints"].items()]
        lines.append("(leakage 0 = the identity's body proportions, 1 = the driver's)")
    return "\n".join(lines)
