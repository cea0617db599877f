"""A trainable Wan-architecture DiT in plain PyTorch whose state dicts are Wan's (ComfyUI's stock loader
reads and writes them). Never imports ComfyUI."""

from .checkpoint import file_metadata, load_wan_dit, load_wan_state_dict, save_wan_state_dict
from .config import WanDiTConfig, strip_prefix
from .model import WanDiT, count_parameters, parameter_count, wan_dit_on_meta

__all__ = ["WanDiT", "WanDiTConfig", "count_parameters", "file_metadata", "load_wan_dit", "load_wan_state_dict",
           "parameter_count", "save_wan_state_dict", "strip_prefix", "wan_dit_on_meta"]

# Wan2.1-architecture video VAE (ComfyUI's stock VAELoader reads its files) and ComfyUI's Wan latent formats.
from .latent_format import Wan21LatentFormat, Wan22LatentFormat, latent_format_for  # noqa: E402
from .vae import WanVAE, WanVAEConfig, load_wan_vae, save_wan_vae  # noqa: E402

__all__ += ["Wan21LatentFormat", "Wan22LatentFormat", "WanVAE", "WanVAEConfig", "latent_format_for", "load_wan_vae",
            "save_wan_vae"]

# The Wan2.2 VAE (48 channels, 4x16x16), the one Wan2.2 TI2V-5B works in.
from .vae22 import Wan22VAE, Wan22VAEConfig, load_wan22_vae  # noqa: E402

__all__ += ["Wan22VAE", "Wan22VAEConfig", "load_wan22_vae"]
