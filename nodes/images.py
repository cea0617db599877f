"""Checks on IMAGE inputs, with messages that say what to connect instead."""

import torch


def single_rgb_image(node: str, name: str, image: torch.Tensor) -> torch.Tensor:
    """image: IMAGE [B,H,W,C]; returns it when B == 1 and C == 3, else raises a ValueError for the popup."""
    if image.ndim != 4:
        raise ValueError(f"{node}: {name} has shape {tuple(image.shape)}; connect an IMAGE ([B,H,W,3]).")
    if image.shape[0] != 1:
        raise ValueError(f"{node}: {name} is a batch of {image.shape[0]} images; connect exactly one image "
                         "(e.g. pick one with 'Image From Batch').")
    if image.shape[-1] == 4:
        raise ValueError(f"{node}: {name} has an alpha channel (RGBA); connect an RGB image, e.g. composite it "
                         "onto a background first.")
    if image.shape[-1] != 3:
        raise ValueError(f"{node}: {name} has {image.shape[-1]} channels; connect an RGB image.")
    if not torch.isfinite(image).all():
        raise ValueError(f"{node}: {name} contains NaN or infinite values; check the node that made it.")
    return image
