"""Three-stage IM-Animation training (paper section 3.4 / 4.1): ``python -m im_animation_core.train``.

stage1: motion tokenizer + heatmap head (heatmap MSE + VQ); stage2: tokenizer + retargeting (L_retarget on
cross-identity pairs); stage3: Wan DiT + all modules end to end (flow matching + 10 * L_retarget).
"""

from .ablation import SelfAttentionRetarget
from .config import (
    ConfigError,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    config_from_dict,
    config_to_dict,
    diff_configs,
    load_config,
)
from .encoders import ConvMotionEncoder, TokenizerEncoder
from .modules_file import load_modules, save_modules
from .trainer import Trainer, TrainingError, TrainResult, run

__all__ = ["ConfigError", "ConvMotionEncoder", "SelfAttentionRetarget", "Stage1Config", "Stage2Config",
           "Stage3Config", "TokenizerEncoder", "TrainResult", "Trainer", "TrainingError", "config_from_dict",
           "config_to_dict", "diff_configs", "load_config", "load_modules", "run", "save_modules"]
