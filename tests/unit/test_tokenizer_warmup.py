"""Stage-1 quantiser warm-up: continuous tokens first, then a codebook drawn from the encoder's latents."""

import torch
import torch.nn.functional as F

from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig
from im_animation_core.train.encoders import TokenizerEncoder

CFG = MotionTokenizerConfig(width=64, layers=1, heads=1, image_size=32, patch_size=8, patch_padding=(0, 0),
                            codebook_size=16)


def test_warmup_passes_continuous_tokens_then_seeds_the_codebook(one_thread):
    torch.manual_seed(0)
    enc = TokenizerEncoder(MotionTokenizer(CFG), quantize_warmup_steps=2).train()
    frames = torch.rand(3, 32, 32, 3)
    tokens, losses, indices = enc(frames)
    z = F.normalize(enc.tokenizer.encode_latents(enc_pixels(enc, frames)).float(), dim=-1)
    assert indices is None and losses["vq"].item() == 0.0
    torch.testing.assert_close(tokens, z)
    tokens.sum().backward()  # the warm-up tokens carry gradient to the encoder
    assert enc.tokenizer.latent_tokens.grad is not None
    before = enc.tokenizer.quantize.embedding.weight.detach().clone()
    enc(frames)  # second call: the switch
    codebook = F.normalize(enc.tokenizer.quantize.embedding.weight.detach().float(), dim=-1)
    assert not torch.equal(before, enc.tokenizer.quantize.embedding.weight)
    # every new row is (a jittered copy of) one of the latents seen during warm-up
    nearest = (codebook @ z.flatten(0, 1).T).max(dim=1).values
    assert nearest.min() > 0.99
    tokens, losses, indices = enc(frames)  # third call: quantised
    assert indices is not None and losses["vq"].item() > 0.0
    assert int(enc.calls) == 2


def test_no_warmup_in_eval_or_by_default(one_thread):
    frames = torch.rand(2, 32, 32, 3)
    enc = TokenizerEncoder(MotionTokenizer(CFG)).train()
    assert enc(frames)[2] is not None
    enc = TokenizerEncoder(MotionTokenizer(CFG), quantize_warmup_steps=5).eval()
    assert enc(frames)[2] is not None and int(enc.calls) == 0


def enc_pixels(enc, frames):
    from im_animation_core.tokenizer import preprocess_frames

    return preprocess_frames(frames, size=enc.tokenizer.config.image_size)
