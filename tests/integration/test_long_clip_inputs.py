"""Long-clip settings through POST /prompt in the real server, on the fixture models (64x64, 17 frames, 2 steps):
the host's context windows and chained chunks run with the patched model, and bad settings (a window longer
than the modules' training clips, an overlap at or past the window, a previous chunk of another size or other
modules, an offset past the clip's end) each get a clear error naming the input or a logged adjustment, and
the server stays healthy."""


import pytest
from integration.test_bad_inputs import composable_prompt

from tools.fixture_models import tiny_modules
from tools.server import assert_ok, execution_error

# The context-window cases use v0.33's node inputs (v0.8's WAN Context Windows has fewer): default host only.
v033 = pytest.mark.default_host_only

OTHER_MODULES = "ima_other_modules.safetensors"


def windowed(length: int, overlap: int, schedule: str = "standard_static") -> dict:
    prompt = composable_prompt(**{"7.length": 17})
    prompt["25"] = {"class_type": "WanContextWindowsManual", "inputs": {
        "model": ["21", 0], "context_length": length, "context_overlap": overlap, "context_schedule": schedule,
        "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid", "freenoise": True,
        "retain_first_frame": False, "split_conds_to_windows": False}}
    prompt["23"]["inputs"]["model"] = ["25", 0]
    return prompt


def continued(**cond) -> dict:
    """A first chunk of 9 frames, and a second chunk that continues it (IM-Animation Conditioning "26")."""
    prompt = composable_prompt(**{"7.length": 17, "22.length": 9})
    prompt["26"] = {"class_type": "IMA_Conditioning", "inputs": {
        "retargeted_motion": ["7", 0], "previous_chunk": ["23", 0], "video_frame_offset": ["22", 4], "length": 8,
        **cond}}
    prompt["27"] = {"class_type": "KSampler", "inputs": {**prompt["23"]["inputs"], "seed": 1,
                                                         "positive": ["26", 0], "negative": ["26", 1],
                                                         "latent_image": ["26", 2]}}
    prompt["24"]["inputs"].update(samples=["27", 0])
    return prompt


def error(server, prompt) -> str:
    err = execution_error(server.run(prompt))
    assert err is not None, "the bad input was accepted"
    assert "Traceback" not in err["exception_message"]
    assert server.get("/system_stats")  # still serving
    return err["exception_message"]


@v033
def test_context_windows_run(server):
    entry = server.run(windowed(5, 4))  # windows of 2 latent frames, overlap 1, over 5
    assert_ok(entry)
    assert len(entry["outputs"]["11"]["images"]) == 17
    assert "each starting from the identity" in server.log()


def test_chained_chunks_run(server):
    entry = server.run(continued())
    assert_ok(entry)
    assert len(entry["outputs"]["11"]["images"]) == 9  # the second chunk: its carried frame + 8 new ones


@v033
def test_a_window_longer_than_the_training_clips_is_cut_with_a_logged_note(server):
    entry = server.run(windowed(81, 30))
    assert_ok(entry)
    log = server.log()
    assert "context_length of 21 latent frames is longer than the 5-latent-frame clips" in log
    assert "context_overlap 7 latent frames does not fit" in log


@v033
@pytest.mark.parametrize("length, overlap", [(5, 8), (5, 12)])  # latent frames: 2/2, 2/3
def test_an_overlap_at_or_past_the_window_is_refused(server, length, overlap):
    message = error(server, windowed(length, overlap))
    assert "context_overlap" in message and "must be less than context_length" in message, message


@v033
def test_windows_over_another_dim_are_refused(server):
    prompt = windowed(5, 4)
    prompt["25"] = {"class_type": "ContextWindowsManual", "inputs": {
        **{k: v for k, v in prompt["25"]["inputs"].items() if k not in ("retain_first_frame",)},
        "context_length": 2, "context_overlap": 1, "dim": 0, "cond_retain_index_list": "",
        "latent_retain_index_list": "", "causal_window_fix": True}}
    message = error(server, prompt)
    assert "dim 0" in message and "WAN Context Windows" in message, message


def test_an_offset_past_the_end_is_refused(server):
    message = error(server, composable_prompt(**{"7.length": 9, "22.video_frame_offset": 9}))
    assert message.startswith("IM-Animation Conditioning:") and "video_frame_offset (9) is past the end" in message


def test_an_offset_that_does_not_continue_is_moved_with_a_logged_note(server):
    prompt = continued(video_frame_offset=12)
    assert_ok(server.run(prompt))
    assert "video_frame_offset 12 does not continue the previous_chunk, which ends on frame 8; using 9" in \
        server.log()


def test_a_previous_chunk_of_another_size_is_refused(server):
    prompt = continued()
    prompt["40"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 96, "height": 64, "length": 9,
                                                                        "batch_size": 1}}
    prompt["26"]["inputs"]["previous_chunk"] = ["40", 0]
    message = error(server, prompt)
    assert message.startswith("IM-Animation Conditioning: previous_chunk is a 16-channel latent of 12x8"), message


def test_a_previous_chunk_of_other_modules_is_refused(server):
    tiny_modules(seed=7).save(str(server.models / "im_animation" / OTHER_MODULES))
    prompt = continued()
    prompt.update({
        "41": {"class_type": "IMA_LoadModules", "inputs": {"modules_name": OTHER_MODULES}},
        "42": {"class_type": "IMA_RetargetToIdentity", "inputs": {**prompt["7"]["inputs"],
                                                                  "im_animation_modules": ["41", 0]}},
    })
    prompt["26"]["inputs"]["retargeted_motion"] = ["42", 0]
    message = error(server, prompt)
    assert "previous_chunk was made with other IM-Animation modules" in message, message
    assert_ok(server.run(continued()))  # and a good run still works
