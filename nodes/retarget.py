"""Load IM-Animation Modules and Retarget to Identity."""

import logging

import comfy.utils
from comfy_api.latest import io

from ..im_animation_core.modules import IMAnimationModules
from ..im_animation_core.motion import check_tokenizer
from ..im_animation_core.pipeline import RetargetedMotion, resolve_length, retarget_with_keypoints
from . import model_files, socket_checks, types
from .devices import loaded, patcher_for
from .errors import user_errors
from .images import single_rgb_image

log = logging.getLogger(__name__)

# Wan generates at most about 1280x720; 2048 leaves room for other Wan models without letting a prompt ask for
# an 8K video latent.
MAX_SIZE = 2048
# Four minutes at 24 fps: longer clips are cut and made in parts.
MAX_LENGTH = 5760


class LoadIMAnimationModules(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_LoadModules",
            display_name="Load IM-Animation Modules",
            category=types.CATEGORY,
            description="Loads the trained IM-Animation modules (retargeting transformer, expression encoder and "
                        "blocks, motion channels of the DiT patch embedding) from models/im_animation/.",
            inputs=[
                io.Combo.Input("modules_name", options=model_files.file_list(),
                               tooltip="An IM-Animation modules file (format in the README) in "
                                       "models/im_animation/."),
            ],
            outputs=[types.Modules.Output(display_name="im_animation_modules")],
        )

    @classmethod
    def execute(cls, modules_name) -> io.NodeOutput:
        path = model_files.full_path("Load IM-Animation Modules", modules_name)
        with user_errors("Load IM-Animation Modules"):
            modules = IMAnimationModules.from_file(path)
        if modules.tokenizer_record is None:
            log.info("Load IM-Animation Modules: '%s' does not record the motion tokenizer it was trained with "
                     "(written before modules files did), so Retarget to Identity cannot check that the motion "
                     "tokens come from it: use the motion tokenizer of the same model set.", modules_name)
        return io.NodeOutput(patcher_for(modules.eval()))


def _output_size(node: str, image, width: int, height: int, multiple: int) -> tuple[int, int]:
    """0 = from the identity image, rounded down to the model's multiple."""
    w = width or image.shape[2] // multiple * multiple
    h = height or image.shape[1] // multiple * multiple
    if not (width and height) and (w < multiple or h < multiple):
        raise ValueError(f"{node}: the identity image is {image.shape[2]}x{image.shape[1]} pixels, smaller than the "
                         f"{multiple} pixels this VAE and DiT need on each side, so no output size can be taken "
                         f"from it: use a larger identity image, or set width and height (multiples of "
                         f"{multiple}).")
    if w < multiple or h < multiple or w % multiple or h % multiple:
        raise ValueError(f"{node}: width {w} x height {h} cannot be generated: this VAE and DiT need both to be "
                         f"positive multiples of {multiple}. Set width/height to multiples of {multiple} (0 = from "
                         "the identity image).")
    return w, h


# Identity images whose aspect ratio differs from the output's by more than this factor lose much of the
# picture to the centre crop; the run goes on, with a warning.
ASPECT_WARNING = 1.5


def warn_about_inputs(node: str, frames: int, image_w: int, image_h: int, w: int, h: int) -> None:
    """Inputs that run but rarely give what the user meant: said in the log, not silently accepted."""
    if frames < 3:
        log.warning("%s: the driving clip has only %d frame(s): the output is %d frame(s) with almost no motion. "
                    "Connect a longer driving clip.", node, frames, frames)
    ratio = (image_w / image_h) / (w / h)
    if max(ratio, 1 / ratio) > ASPECT_WARNING:
        log.warning("%s: the identity image (%dx%d) and the output (%dx%d) differ in aspect ratio by %.1fx: the "
                    "centre crop drops %d%% of the identity image. Set width/height to 0, or to the image's aspect "
                    "ratio.", node, image_w, image_h, w, h, max(ratio, 1 / ratio),
                    round(100 * (1 - min(ratio, 1 / ratio))))


class RetargetToIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_RetargetToIdentity",
            display_name="Retarget to Identity",
            category=types.CATEGORY,
            description="Moves the driving motion onto the identity image's body, scale and layout (mask-token "
                        "retargeting). The output follows the identity image's framing; the driving video's "
                        "aspect ratio does not matter.",
            inputs=[
                types.Modules.Input("im_animation_modules", tooltip="From Load IM-Animation Modules."),
                types.MotionTokens.Input("motion_tokens", tooltip="From Encode Driving Video."),
                io.Image.Input("identity_image", tooltip="The character to animate: one RGB image."),
                io.Vae.Input("vae", tooltip="The video model's VAE (Wan2.2 VAE for TI2V-5B); encodes the "
                                            "identity image."),
                io.Int.Input("width", default=0, min=0, max=MAX_SIZE, step=16,
                             tooltip="Output width in pixels; 0 = the identity image's width rounded down to a "
                                     "multiple the model accepts (32 for Wan2.2, 16 for Wan2.1). The identity "
                                     "image is centre-cropped and resized to width x height."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIZE, step=16,
                              tooltip="Output height in pixels; 0 = from the identity image (see width)."),
                io.Int.Input("length", default=0, min=0, max=MAX_LENGTH, step=4,
                             tooltip="Output frames, rounded down to 4k+1; 0 = all encoded driving frames (at "
                                     f"most {MAX_LENGTH})."),
            ],
            outputs=[types.RetargetedMotion.Output(display_name="retargeted_motion")],
        )

    @classmethod
    def execute(cls, im_animation_modules, motion_tokens, identity_image, vae, width, height,
                length) -> io.NodeOutput:
        node = "Retarget to Identity"
        socket_checks.modules(node, "im_animation_modules", im_animation_modules)
        socket_checks.motion_tokens(node, "motion_tokens", motion_tokens)
        image = single_rgb_image(node, "identity_image", socket_checks.image(node, "identity_image", identity_image))
        modules = im_animation_modules.model
        with user_errors(node):
            mismatch = check_tokenizer(motion_tokens, modules.tokenizer_record, modules.file_name)
        if mismatch:
            log.warning("%s: %s", node, mismatch)
        if not hasattr(vae, "encode") or not hasattr(vae, "latent_channels"):
            raise ValueError(f"{node}: input 'vae' got {type(vae).__name__}; connect the output of Load VAE.")
        if vae.latent_channels != modules.dit.latent_channels:
            raise ValueError(f"{node}: the VAE makes {vae.latent_channels}-channel latents but these IM-Animation "
                             f"modules were trained for {modules.dit.latent_channels}: use the matching VAE.")
        w, h = _output_size(node, image, width, height, vae.spacial_compression_encode() * 2)
        warn_about_inputs(node, len(motion_tokens), image.shape[2], image.shape[1], w, h)
        with user_errors(node):
            frames = resolve_length(length, len(motion_tokens))
            pixels = comfy.utils.common_upscale(image.movedim(-1, 1), w, h, "bilinear", "center").movedim(1, -1)
            identity_latent = vae.encode(pixels[..., :3]).float().cpu()
            modules = loaded(im_animation_modules)
            motion, keypoints, confidence = retarget_with_keypoints(modules, motion_tokens.tokens, identity_latent,
                                                                    frames, (h, w))
        return io.NodeOutput(RetargetedMotion(motion=motion.cpu(), identity_latent=identity_latent, length=frames,
                                              width=w, height=h, fps=motion_tokens.fps,
                                              modules=im_animation_modules, keypoints=keypoints,
                                              keypoint_confidence=confidence))
