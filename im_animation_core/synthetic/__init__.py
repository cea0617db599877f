"""Procedural articulated characters: the same motion rendered on any identity (exact cross-reenactment
ground truth). This first version draws a 2D stick character; see render.py."""

from .render import Identity, Motion, render_clip

__all__ = ["Identity", "Motion", "render_clip"]
