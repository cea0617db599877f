"""Where the committed demo model set lives, in a module with no heavy imports (the GPU training script reads it
through lab/train_demo.py on images that lack the demo's media tools).

DEMO_NAMES: {key: file name the demo workflow asks for}, keys dit, vae, tokenizer, modules.
SOURCES: {key: models/<ComfyUI models subfolder>/<name>}, where make demo, make eval and train_demo.py --save /
--restore find the set.
"""

from .comfy_path import REPO  # (os, sys and pathlib only, at import)

DEMO_NAMES = {"dit": "ima_demo_wan.safetensors", "vae": "ima_demo_wan21_vae.safetensors",
              "tokenizer": "ima_demo_motion_tokenizer.safetensors", "modules": "ima_demo_modules.safetensors"}
# {key: the ComfyUI models subfolder its loader lists}
TRAINED = {"dit": "diffusion_models", "vae": "vae", "tokenizer": "im_animation", "modules": "im_animation"}
SOURCES = {k: REPO / "models" / sub / DEMO_NAMES[k] for k, sub in TRAINED.items()}
