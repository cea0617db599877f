"""The pack inside the real ComfyUI server: registration, both workflows end to end, bad input."""

import copy
import json
from pathlib import Path

import pytest

from tools.comfy_path import REPO
from tools.fixture_models import HEATMAP_HEAD_NAME, MODULES_NAME, TOKENIZER_NAME
from tools.media import DRIVING_NAME, read_video_info
from tools.server import assert_ok, execution_error
from tools.workflow import (
    DYNAMIC_COMBO,
    FRONTEND_ONLY,
    adapt_5b_prompt_to_fixtures,
    check_links,
    input_specs,
    is_widget,
    ui_to_api,
)

WORKFLOWS = REPO / "workflows"
EXPECTED = {  # node id -> (inputs, output types)
    "IMA_LoadMotionTokenizer": (["tokenizer_name", "dtype"], ["IMA_MOTION_TOKENIZER"]),
    "IMA_EncodeDrivingVideo": (["motion_tokenizer", "frames", "fps", "stride", "max_frames"], ["IMA_MOTION_TOKENS"]),
    "IMA_LoadModules": (["modules_name"], ["IMA_MODULES"]),
    "IMA_RetargetToIdentity": (["im_animation_modules", "motion_tokens", "identity_image", "vae", "width", "height",
                                "length"], ["IMA_RETARGETED_MOTION"]),
    "IMA_ExpressionEncode": (["im_animation_modules", "frames", "motion_tokens", "pose_keypoints"],
                             ["IMA_EXPRESSION"]),
    "IMA_LoadDrivingVideoPath": (["video", "path", "start_frame", "stride", "max_frames", "width", "height"],
                                 ["IMAGE", "FLOAT"]),
    "IMA_PreviewMotionHeatmaps": (["motion_tokens", "frames", "heatmap_head_name", "opacity"], ["IMAGE"]),
    "IMA_SaveMotionTokens": (["motion_tokens", "filename_prefix"], []),
    "IMA_LoadMotionTokens": (["path"], ["IMA_MOTION_TOKENS"]),
    "IMA_RetargetedPose": (["retargeted_motion", "confidence_threshold", "hands"], ["POSE_KEYPOINT", "IMAGE"]),
    "IMA_SavePoseKeypoints": (["pose_keypoint", "filename_prefix", "fps", "images"], []),
    "IMA_ApplyModel": (["model", "modules"], ["MODEL"]),
    "IMA_Conditioning": (["retargeted_motion", "expression", "positive", "negative", "previous_chunk",
                          "video_frame_offset", "length"],
                         ["CONDITIONING", "CONDITIONING", "LATENT", "INT", "INT"]),
    "IMA_Wan22Sampler": (["model", "retargeted_motion", "seed", "steps", "cfg", "sampler_name", "scheduler",
                          "window_frames", "overlap_frames",
                          "expression", "positive", "negative"], ["LATENT"]),
}


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def load(name):
    return json.loads((WORKFLOWS / name).read_text())


def load_export(name):
    """The frontend's API-format export of workflows/<name> (workflows/api/, written and kept current by the
    browser tests on the default host): what make demo submits."""
    return json.loads((WORKFLOWS / "api" / name).read_text())


def saved_video(server, entry) -> Path:
    for out in entry["outputs"].values():
        for item in out.get("images", []):
            if item["filename"].endswith(".mp4"):
                return server.base / "output" / item["subfolder"] / item["filename"]
    raise AssertionError(f"no video in outputs: {entry['outputs']}")


def test_every_node_registered_with_declared_io(object_info):
    assert {k for k in object_info if k.startswith("IMA_")} == set(EXPECTED)
    for node, (inputs, outputs) in EXPECTED.items():
        info = object_info[node]
        assert [n for n, _, _ in input_specs(info)] == inputs, node
        assert info["output"] == outputs, node
        assert info["category"] == "IM-Animation"
        assert info["description"], node
        for name, _, options in input_specs(info):
            assert options.get("tooltip"), f"{node}.{name} has no tooltip"


def test_this_host_is_in_the_supported_range():
    """pyproject.toml's requires-comfyui (what ComfyUI-Manager and the registry read) admits the host under test,
    and its floor is a host the suite runs against (v0.8.0)."""
    import tomllib
    from packaging.specifiers import SpecifierSet

    from tools.comfy_path import find_comfyui

    spec = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"])
    version = (find_comfyui() / "comfyui_version.py").read_text().split('"')[1]
    assert version in spec, (version, str(spec))
    assert "0.8.0" in spec and "0.7.0" not in spec, str(spec)


def test_pack_imports_cleanly(server):
    log = server.log()
    assert "comfyui-im-animation" in log  # listed among the custom nodes it imported
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log[-3000:]


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_frontend_exports_are_the_workflows(name):
    """Each export has the workflow's nodes (less the frontend-only notes) with their links."""
    ui, export = load(name), load_export(name)
    nodes = {str(n["id"]): n["type"] for n in ui["nodes"] if n["type"] not in FRONTEND_ONLY}
    assert {k: v["class_type"] for k, v in export.items()} == nodes
    links = {(str(dst), n["name"]): [str(src), slot] for n_ in ui["nodes"] for n in n_.get("inputs", [])
             for lid, src, slot, dst, _, _ in ui["links"] if lid == n.get("link")}
    got = {(k, i): v for k, node in export.items() for i, v in node["inputs"].items() if isinstance(v, list)}
    assert got == links


def test_demo_workflow_runs_end_to_end(server, object_info):
    """The frontend's export of the demo workflow (what make demo submits) runs on this host."""
    ui = load("im_animation_demo.json")
    assert check_links(ui, object_info) == []
    entry = server.run(load_export("im_animation_demo.json"))
    assert_ok(entry)
    frames, width, height = read_video_info(saved_video(server, entry))
    assert (frames, width, height) == (17, 128, 128)  # the 17-frame, 128x128 driving clip, identity size


def widget_problems(ui: dict, object_info: dict, allowed_files: set[str]) -> list[str]:
    """Widget values the node definitions would reject (model file names are checked against the real
    file names the workflow documents, since those files are not on this machine)."""
    problems = []
    api = ui_to_api(ui, object_info)
    for node in ui["nodes"]:
        if node["type"] not in object_info:
            continue
        api_inputs = api[str(node["id"])]["inputs"]
        linked = {i["name"] for i in node["inputs"] if i.get("link") is not None}
        for name, type_, opt in input_specs(object_info[node["type"]]):
            if not is_widget(type_, opt) or name not in api_inputs or name in linked:
                continue
            value = api_inputs[name]
            choices = type_ if isinstance(type_, list) else opt.get("options")
            if type_ == DYNAMIC_COMBO:
                choices = [o["key"] for o in choices]
            if choices is not None or type_ == "COMBO":
                if value not in (choices or []) and value not in allowed_files:
                    problems.append(f"{node['type']}.{name}={value!r} not among {choices}")
            elif type_ in ("INT", "FLOAT"):
                if not isinstance(value, (int, float)) or not opt.get("min", value) <= value <= opt.get("max", value):
                    problems.append(f"{node['type']}.{name}={value!r} outside [{opt.get('min')}, {opt.get('max')}]")
            elif type_ == "STRING" and not isinstance(value, str):
                problems.append(f"{node['type']}.{name}={value!r} is not a string")
    return problems


def test_wan22_5b_workflow_is_valid_for_the_server(object_info):
    ui = load("im_animation_wan22_5b.json")
    missing = {n["type"] for n in ui["nodes"] if n["type"] not in object_info} - {"MarkdownNote", "Note"}
    assert not missing
    assert check_links(ui, object_info) == []
    real_files = {"wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                  "motion_encoder_latest.safetensors", "im_animation_wan22_5b_modules.safetensors",
                  "ima_demo_identity.png", "ima_demo_driving.mp4"}
    assert widget_problems(ui, object_info, real_files) == []


def test_wan22_5b_workflow_executes_with_fixture_models(server, object_info):
    """The 5B graph with the tiny fixture DiT/VAE/tokenizer/modules in place of the real files. The umt5-xxl
    text encoder cannot be made small (ComfyUI builds it at a fixed size), so this test bypasses the
    CLIPLoader and both CLIPTextEncode nodes: the sampler then runs with its empty-text context. The graph is the
    frontend's export; the converter's version of it is checked in test_wan22_5b_workflow_is_valid_for_the_server."""
    prompt = adapt_5b_prompt_to_fixtures(load_export("im_animation_wan22_5b.json"))
    entry = server.run(prompt)
    assert_ok(entry)
    assert read_video_info(saved_video(server, entry)) == (9, 64, 96)


def demo_prompt(object_info):
    return ui_to_api(load("im_animation_demo.json"), object_info)


def node_of(prompt, class_type):
    return next(v for v in prompt.values() if v["class_type"] == class_type)


def add_node(prompt, class_type, inputs) -> str:
    key = str(max(int(k) for k in prompt) + 1)
    prompt[key] = {"class_type": class_type, "inputs": inputs}
    return key


def bad_identity_batch(prompt):
    retarget = node_of(prompt, "IMA_RetargetToIdentity")
    retarget["inputs"]["identity_image"] = [add_node(prompt, "RepeatImageBatch",
                                                     {"image": retarget["inputs"]["identity_image"], "amount": 2}), 0]


def bad_identity_alpha(prompt):
    retarget = node_of(prompt, "IMA_RetargetToIdentity")
    image = retarget["inputs"]["identity_image"]
    retarget["inputs"]["identity_image"] = [add_node(prompt, "JoinImageWithAlpha",
                                                     {"image": image, "alpha": [image[0], 1]}), 0]


def bad_size(prompt):
    node_of(prompt, "IMA_RetargetToIdentity")["inputs"].update(width=100, height=64)


def wrong_tokenizer_file(prompt):
    node_of(prompt, "IMA_LoadMotionTokenizer")["inputs"]["tokenizer_name"] = MODULES_NAME


def wrong_modules_file(prompt):
    node_of(prompt, "IMA_LoadModules")["inputs"]["modules_name"] = TOKENIZER_NAME


def too_long(prompt):
    node_of(prompt, "IMA_RetargetToIdentity")["inputs"]["length"] = 41


@pytest.mark.parametrize("mutate, node_name, words", [
    (bad_identity_batch, "Retarget to Identity", "batch of 2 images"),
    (bad_identity_alpha, "Retarget to Identity", "alpha channel"),
    (bad_size, "Retarget to Identity", "multiples of 16"),
    (wrong_tokenizer_file, "Load Motion Tokenizer", MODULES_NAME),
    (wrong_modules_file, "Load IM-Animation Modules", "not an IM-Animation modules file"),
    (too_long, "Retarget to Identity", "more frames than the driving clip has"),
])
def test_bad_input_gives_a_clear_error_and_the_server_keeps_working(server, object_info, mutate, node_name, words):
    prompt = demo_prompt(object_info)
    mutate(prompt)
    err = execution_error(server.run(prompt))
    assert err is not None, "the bad input was accepted"
    assert err["exception_message"].startswith(node_name), err["exception_message"]
    assert words in err["exception_message"], err["exception_message"]
    assert server.get("/system_stats")  # still serving


def test_missing_model_file_is_rejected_by_name(server, object_info):
    prompt = demo_prompt(object_info)
    node_of(prompt, "IMA_LoadModules")["inputs"]["modules_name"] = "no_such_file.safetensors"
    status, body = server.queue(prompt)
    assert status == 400
    assert "no_such_file.safetensors" in json.dumps(body)


def test_a_good_run_after_failures_still_works(server, object_info):
    prompt = copy.deepcopy(demo_prompt(object_info))
    node_of(prompt, "KSampler")["inputs"]["seed"] = 7  # not a cached result
    entry = server.run(prompt)
    assert_ok(entry)


def path_loader_prompt(server, path: str, **widgets) -> dict:
    """Load Driving Video (path) -> Encode Driving Video -> Preview Motion Heatmaps -> Save Image."""
    return {
        "1": {"class_type": "IMA_LoadDrivingVideoPath", "inputs": dict(dict(
            video="", path=path, start_frame=0, stride=1, max_frames=0, width=0, height=0), **widgets)},
        "2": {"class_type": "IMA_LoadMotionTokenizer", "inputs": {"tokenizer_name": TOKENIZER_NAME, "dtype": "auto"}},
        "3": {"class_type": "IMA_EncodeDrivingVideo", "inputs": {"motion_tokenizer": ["2", 0], "frames": ["1", 0],
                                                                 "fps": ["1", 1], "stride": 2, "max_frames": 0}},
        "4": {"class_type": "IMA_PreviewMotionHeatmaps", "inputs": {"motion_tokens": ["3", 0], "frames": ["1", 0],
                                                                    "heatmap_head_name": HEATMAP_HEAD_NAME,
                                                                    "opacity": 0.7}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "ima_heatmaps"}},
    }


def test_path_loader_and_heatmap_preview(server):
    entry = server.run(path_loader_prompt(server, str(server.base / "input" / DRIVING_NAME), width=64, height=48))
    assert_ok(entry)
    images = entry["outputs"]["4"]["images"] if "4" in entry["outputs"] else entry["outputs"]["5"]["images"]
    assert len(images) == 9  # 17 frames, every 2nd kept by Encode Driving Video
    from PIL import Image
    first = Image.open(server.base / "output" / images[0]["subfolder"] / images[0]["filename"])
    assert first.size == (64, 48)


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"not a video at all" * 100, "video")])
def test_unreadable_or_empty_video_gives_a_clear_error(server, content, words):
    bad = server.base / "input" / f"bad_{len(content)}.mp4"  # the loader reads only inside the allowed folders
    bad.write_bytes(content)
    err = execution_error(server.run(path_loader_prompt(server, str(bad))))
    assert err is not None and err["exception_message"].startswith("Load Driving Video (path)")
    # named as the input folder lists it, never by the server's absolute path (docs/security.md)
    assert words in err["exception_message"].lower() and f"'{bad.name}'" in err["exception_message"]
    assert str(server.base) not in err["exception_message"], err["exception_message"]
    assert server.get("/system_stats")


def test_output_follows_the_identity_image_when_aspect_ratios_differ(server, object_info):
    """Documented policy: the driving clip is 128x128, the identity 64x96 (portrait): the video is 64x96."""
    prompt = demo_prompt(object_info)
    retarget = node_of(prompt, "IMA_RetargetToIdentity")
    retarget["inputs"]["identity_image"] = [add_node(prompt, "ImageScale", {
        "image": retarget["inputs"]["identity_image"], "upscale_method": "bilinear", "width": 64, "height": 96,
        "crop": "disabled"}), 0]
    entry = server.run(prompt)
    assert_ok(entry)
    assert read_video_info(saved_video(server, entry)) == (17, 64, 96)


def test_motion_tokens_round_trip_through_save_and_load(server):
    prompt = path_loader_prompt(server, str(server.base / "input" / DRIVING_NAME))
    del prompt["4"], prompt["5"]
    prompt["6"] = {"class_type": "IMA_SaveMotionTokens", "inputs": {"motion_tokens": ["3", 0],
                                                                   "filename_prefix": "roundtrip"}}
    entry = server.run(prompt)
    assert_ok(entry)
    saved = entry["outputs"]["6"]["motion_tokens"][0]
    assert saved["frames"] == 9
    from im_animation_core.motion import load_motion_tokens
    tokens = load_motion_tokens(str(server.base / "output" / saved["subfolder"] / saved["filename"]))
    assert tokens.tokens.shape[0] == 9 and tokens.frame_indices.tolist() == list(range(0, 17, 2))

    second = path_loader_prompt(server, str(server.base / "input" / DRIVING_NAME))
    second["3"] = {"class_type": "IMA_LoadMotionTokens",
                   "inputs": {"path": f"{saved['subfolder']}/{saved['filename']}"}}
    del second["2"]
    entry = server.run(second)
    assert_ok(entry)
    assert len(entry["outputs"]["5"]["images"]) == 9
