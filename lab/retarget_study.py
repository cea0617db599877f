"""The retargeter-plateau study: Stage-2 retargeting trained on cached inputs, to compare recipes quickly.

Why. The first demo set's retargeter left the predict-the-mean heatmap plateau only slowly (docs/training.md;
commit 4567f20 traced that to a collapsed tokenizer, so this study's first results, from before that commit,
were measured on tokens without motion). Stage 2 with a frozen tokenizer spends most of a step re-encoding the
same clips, so this study encodes the driving clips (frozen demo tokenizer) and the identity images (frozen demo VAE)
once, then trains only the RetargetTransformer on them with the Stage-2 loss (heatmap MSE per latent frame,
visibility-weighted), and scores it on held-out pairs with the same PCK / error / leakage scorer as `make eval`.

    python -m lab.retarget_study cache                  # runs/retarget_study/{train,heldout}.pt, ~7 min
    python -m lab.retarget_study train NAME [--head pixel_shuffle] [--init local] [--sigma 2] [--steps N]

Recipes compared (docs/training.md has the figures): the heatmap head ("upsample": the demo's; or
"pixel_shuffle"), the init ("default", or "local": the first block's attention made local in time and in
space, see retarget_local_attention_init_), and the heatmap sigma. Not a trainer: no checkpoints, no DDP.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from im_animation_core.eval.retarget_eval import (
    FOUND_CONFIDENCE,
    heatmap_joints,
    joint_scores,
    pool_joints,
)
from im_animation_core.frames import latent_frame_times
from im_animation_core.heatmap_head import heatmap_mse
from im_animation_core.retarget import RetargetConfig, RetargetTransformer
from im_animation_core.train.recipe import recipe_phase_config
from im_animation_core.train.retarget_init import retarget_local_attention_init_
from im_animation_core.train.schedule import lr_factor
from im_animation_core.train.targets import latent_frame_heatmaps

REPO = Path(__file__).resolve().parents[1]

OUT = REPO / "runs" / "retarget_study"
FRAMES, SIZE, THICKNESS = 17, 64, 1.75
SPLITS = {"train": ("train", 8000, 2), "heldout": ("heldout", 256, 2027)}  # name: (split, count, data seed)
KEYS = ("driving", "identity", "target_joints", "target_visible", "driving_joints", "driving_visible")


def cache(args) -> None:
    """Encode SPLITS with the demo's frozen tokenizer and VAE (configs/demo64.json's stage3 data settings)."""
    from im_animation_core.data.pairs import SyntheticPairs
    from im_animation_core.tokenizer.encode import encode_clips
    from im_animation_core.train.config import config_from_dict
    from im_animation_core.train.stages import Stage2

    cfg = recipe_phase_config(REPO / "configs/demo64.json", "stage2")[1]
    cfg.update(output_dir=str(OUT / "unused"), tokenizer={"path": args.tokenizer, "trainable": False},
               vae={"path": args.vae})
    stage = Stage2(config_from_dict("stage2", cfg))
    stage.to(torch.device("cpu"))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (split, count, seed) in SPLITS.items():
        data = SyntheticPairs(split=split, num_samples=count, frames=FRAMES, size=SIZE, seed=seed,
                              thickness_scale=THICKNESS)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("tokens", "ref", "joints", "visible", "djoints",
                                                                "dvisible")}
        start = time.time()
        for i in range(0, count, 8):
            items = [data[j] for j in range(i, min(count, i + 8))]
            batch = {k: torch.stack([it[k] for it in items]) for k in KEYS}
            with torch.no_grad():
                batch = stage.prepare(batch)
                tokens, _ = encode_clips(stage.model.encoder, batch["driving"], False)
            for k, v in zip(parts, (tokens.half(), batch["identity_latent"][:, :, 0], batch["target_joints"],
                                    batch["target_visible"], batch["driving_joints"], batch["driving_visible"]),
                            strict=True):
                parts[k].append(v)
        torch.save({k: torch.cat(v) for k, v in parts.items()}, OUT / f"{name}.pt")
        print(f"{name}: {count} pairs in {time.time() - start:.0f} s", flush=True)


# ---- training -----------------------------------------------------------------------------------------------
def _predict(rt: RetargetTransformer, data: dict, idx: torch.Tensor) -> torch.Tensor:
    """Retarget heatmaps [B,F,J,Hh,Wh] of the cached pairs ``idx``."""
    t = data["tokens"].shape[1]
    ref = data["ref"][idx]
    _, feats = rt(data["tokens"][idx].float(), torch.arange(t, dtype=torch.float32), ref, latent_frame_times(t),
                  return_features=True)
    return rt.heatmap_head(feats, rt.grid(ref)).float()


def _loss(pred: torch.Tensor, data: dict, idx: torch.Tensor, sigma: float) -> torch.Tensor:
    target, weight = latent_frame_heatmaps(data["joints"][idx], data["visible"][idx], (SIZE, SIZE),
                                           tuple(pred.shape[-2:]), sigma)
    return heatmap_mse(pred.flatten(0, 1), target.flatten(0, 1), weight.flatten(0, 1))


@torch.no_grad()
def evaluate(rt, data, count=128) -> dict[str, float]:
    """Held-out sigma-1 heatmap loss (the demo's training loss), PCK@0.05, mean joint error (px) and leakage
    on the first ``count`` pairs."""
    rt.eval()
    idx = torch.arange(min(count, data["tokens"].shape[0]))
    pred = _predict(rt, data, idx)
    xy, conf = heatmap_joints(pred, (SIZE, SIZE))
    true, vis = pool_joints(data["joints"][idx].float(), data["visible"][idx].bool())
    drv, dvis = pool_joints(data["djoints"][idx].float(), data["dvisible"][idx].bool())
    flat = [v.flatten(0, 1) for v in (true, vis, drv, dvis)]
    scores = joint_scores(xy.flatten(0, 1), torch.ones_like(flat[1]), (conf > FOUND_CONFIDENCE).flatten(0, 1),
                          *flat, SIZE)
    rt.train()
    return {"loss": float(_loss(pred, data, idx, 1.0)), **{k: round(float(v), 4) for k, v in scores.items()}}


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    data = torch.load(OUT / "train.pt")
    held = torch.load(OUT / "heldout.pt")
    sizes = recipe_phase_config(REPO / "configs/demo64.json", "stage2")[1]["modules"]["retarget"]
    cfg = RetargetConfig(motion_dim=data["tokens"].shape[-1], motion_tokens=data["tokens"].shape[-2],
                         latent_channels=data["ref"].shape[1], patch_size=2, heatmap_joints=data["joints"].shape[2],
                         **{**sizes, "heatmap_head": args.head, "heatmap_channels": args.heatmap_channels})
    rt = RetargetTransformer(cfg)
    if args.init == "local":
        retarget_local_attention_init_(rt, data["tokens"][:16], data["ref"][:16])
    opt = torch.optim.AdamW(rt.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    log = (OUT / f"{args.name}.jsonl").open("w")
    start, recent = time.time(), []
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step - 1, 50, 0, args.steps)
        idx = torch.randint(0, data["tokens"].shape[0], (args.batch_size,), generator=gen)
        loss = _loss(_predict(rt, data, idx), data, idx, args.sigma)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rt.parameters(), 1.0)
        opt.step()
        recent = (recent + [loss.item()])[-50:]
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, "train_loss": sum(recent) / len(recent), **evaluate(rt, held),
                   "seconds": round(time.time() - start)}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--tokenizer", default="models/im_animation/ima_demo_motion_tokenizer.safetensors")
    c.add_argument("--vae", default="models/vae/ima_demo_wan21_vae.safetensors")
    t = sub.add_parser("train")
    t.add_argument("name")
    t.add_argument("--head", default="upsample", choices=("upsample", "pixel_shuffle"))
    t.add_argument("--heatmap-channels", type=int, default=32)
    t.add_argument("--init", default="default", choices=("default", "local"))
    t.add_argument("--sigma", type=float, default=1.0)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    (cache if args.cmd == "cache" else train)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
