"""Preview Motion Heatmaps: what the motion tokens encode, drawn over the driving frames."""

import math

import comfy.utils
import torch
from comfy_api.latest import io

from ..im_animation_core.heatmap_head import HeatmapHead
from ..im_animation_core.heatmaps import heatmaps_to_image
from . import model_files, socket_checks, types
from .devices import loaded, patcher_for
from .errors import user_errors


class PreviewMotionHeatmaps(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_PreviewMotionHeatmaps",
            display_name="Preview Motion Heatmaps",
            category=types.CATEGORY,
            description="Decodes the motion tokens into the 62 joint heatmaps (20 body + 2x21 hand joints) with the "
                        "Stage-1 heatmap head and draws them over the driving frames.",
            inputs=[
                types.MotionTokens.Input("motion_tokens", tooltip="From Encode Driving Video."),
                io.Image.Input("frames", tooltip="The driving frames the tokens came from (for the overlay)."),
                io.Combo.Input("heatmap_head_name", options=model_files.file_list(),
                               tooltip="Stage-1 heatmap head weights (motion decoder + joint decoder) in "
                                       "models/im_animation/, written by this project's Stage-1 trainer."),
                io.Float.Input("opacity", default=0.7, min=0.0, max=1.0, step=0.05,
                               tooltip="How strongly the heatmaps cover the frames."),
            ],
            outputs=[io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, motion_tokens, frames, heatmap_head_name, opacity) -> io.NodeOutput:
        node = "Preview Motion Heatmaps"
        socket_checks.motion_tokens(node, "motion_tokens", motion_tokens)
        socket_checks.image(node, "frames", frames)
        if not math.isfinite(opacity):
            raise ValueError(f"{node}: opacity is {opacity}; give a number from 0 to 1.")
        path = model_files.full_path(node, heatmap_head_name)
        with user_errors(node):
            head = HeatmapHead.from_file(path)
        if frames.shape[0] != motion_tokens.source_frame_count:
            raise ValueError(f"{node}: frames has {frames.shape[0]} frames but the motion tokens came from "
                             f"{motion_tokens.source_frame_count}: connect the frames given to Encode Driving Video.")
        model = loaded(patcher_for(head.eval()))
        p = next(model.parameters())
        kept = frames[motion_tokens.frame_indices]
        out = []
        for i in range(0, len(kept), 32):
            with torch.no_grad():
                heat = model(motion_tokens.tokens[i:i + 32].to(p)).float().cpu()
            color = heatmaps_to_image(heat).movedim(-1, 1)
            color = comfy.utils.common_upscale(color, kept.shape[2], kept.shape[1], "bilinear", "disabled")
            alpha = opacity * color.max(dim=1, keepdim=True).values.clamp(0, 1)
            out.append((kept[i:i + 32].movedim(-1, 1) * (1 - alpha) + color * alpha).movedim(1, -1))
        return io.NodeOutput(torch.cat(out).clamp(0, 1))
