"""A trainable Wan-architecture DiT in plain PyTorch whose state dicts are Wan's (ComfyUI's stock loader
reads and writes them). Never imports ComfyUI."""

from .checkpoint import file_metadata, load_wan_dit, load_wan_state_dict, save_wan_state_dict
from .config import WanDiTConfig, strip_prefix
from .model import WanDiT, count_parameters, parameter_count, wan_dit_on_meta

__all__ = ["WanDiT", "WanDiTConfig", "count_parameters", "file_metadata", "load_wan_dit", "load_wan_state_dict",
           "parameter_count", "save_wan_state_dict", "strip_prefix", "wan_dit_on_meta"]
