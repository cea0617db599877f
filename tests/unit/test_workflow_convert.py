"""tools/workflow.py's UI-to-API conversion on node definitions as the two hosts report them: plain combos (v0.8's
Save Video) and the dynamic combos of v0.33's Save Video, whose selected option adds widgets "<name>.<input>"
right after it (the frontend's order). The browser tests compare the converter with the real frontend's export."""

import pytest

from tools.workflow import ui_to_api


def combo(*keys, **more):
    return ["COMBO", {"options": list(keys), **more}]


def dynamic(*options, **more):
    """A COMFY_DYNAMICCOMBO_V3 spec; options: (key, {"required": {...}, "optional": {...}})."""
    return ["COMFY_DYNAMICCOMBO_V3", {"options": [{"key": k, "inputs": inputs} for k, inputs in options], **more}]


ENCODING = dynamic(("auto", {"required": {}}),
                   ("re-encode", {"required": {"crf": ["FLOAT", {"default": 23.0}],
                                               "color_space": combo("auto", "sRGB")}}))
CODEC = dynamic(("auto", {"required": {}}), ("h264", {"required": {}, "optional": {"encoding": ENCODING}}))
SAVE_VIDEO_033 = {"input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {}],
                                         "format": dynamic(("auto", {"required": {"codec": CODEC}}),
                                                           ("mp4", {"required": {"codec": CODEC}}),
                                                           ("webm", {"required": {}}))},
                            "optional": {"codec": [CODEC[0], {**CODEC[1], "hidden": True}]}},
                  "input_order": {"required": ["video", "filename_prefix", "format"], "optional": ["codec"]},
                  "output": []}
SAVE_VIDEO_08 = {"input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {}],
                                        "format": combo("auto", "mp4"), "codec": combo("auto", "h264")}},
                 "output": []}
CREATE_VIDEO = {"input": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0}]}},
                "output": ["VIDEO"]}


def workflow(save_values: list) -> dict:
    return {"nodes": [{"id": 1, "type": "CreateVideo", "inputs": [], "widgets_values": [24.0]},
                      {"id": 2, "type": "SaveVideo", "widgets_values": save_values,
                       "inputs": [{"name": "video", "type": "VIDEO", "link": 7}]}],
            "links": [[7, 1, 0, 2, 0, "VIDEO"]]}


def convert(save_values, save_info):
    return ui_to_api(workflow(save_values), {"SaveVideo": save_info, "CreateVideo": CREATE_VIDEO})["2"]["inputs"]


def test_dynamic_combo_values_keep_their_dotted_names_in_widget_order():
    got = convert(["video/x", "mp4", "h264", "re-encode", 18.0, "sRGB", "auto"], SAVE_VIDEO_033)
    assert got == {"video": ["1", 0], "filename_prefix": "video/x", "format": "mp4", "format.codec": "h264",
                   "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 18.0,
                   "format.codec.encoding.color_space": "sRGB", "codec": "auto"}


def test_an_option_without_inputs_adds_no_widgets():
    assert convert(["video/x", "webm", "auto"], SAVE_VIDEO_033) == {
        "video": ["1", 0], "filename_prefix": "video/x", "format": "webm", "codec": "auto"}


def test_the_floor_hosts_plain_combos_and_surplus_values_as_the_frontend_ignores_them():
    got = convert(["video/x", "auto", "auto", "auto"], SAVE_VIDEO_08)  # a file saved on v0.33, opened on v0.8
    assert got == {"video": ["1", 0], "filename_prefix": "video/x", "format": "auto", "codec": "auto"}


def test_a_value_that_is_no_option_is_an_error():
    with pytest.raises(ValueError, match="'mov' is not an option"):
        convert(["video/x", "mov", "auto", "auto"], SAVE_VIDEO_033)


def test_dynamic_sockets_are_refused_not_dropped():
    info = {"input": {"required": {"values": ["COMFY_AUTOGROW_V3", {}]}}, "output": []}
    ui = {"nodes": [{"id": 1, "type": "Grow", "inputs": [], "widgets_values": []}], "links": []}
    with pytest.raises(NotImplementedError, match="COMFY_AUTOGROW_V3"):
        ui_to_api(ui, {"Grow": info})


def test_one_node_sampler_keeps_the_demos_model_sampling_before_the_sampler():
    """The demo workflow sets its flow shift (ModelSamplingSD3, the demo DiT's training shift) between Apply
    IM-Animation and the KSampler; made one-node, the shift node takes Apply's input model and feeds the sampler,
    and no input names a removed node."""
    import json

    from tools import demo_support as ds
    from tools.comfy_path import REPO
    from tools.workflow import one_node_sampler


    ui = json.loads((REPO / "workflows" / "im_animation_demo.json").read_text())
    export = json.loads((REPO / "workflows" / "api" / "im_animation_demo.json").read_text())
    (shift,) = [k for k, v in export.items() if v["class_type"] == "ModelSamplingSD3"]
    assert export[shift]["inputs"]["shift"] == ds.DEMO_SHIFT
    assert [n["widgets_values"] for n in ui["nodes"] if str(n["id"]) == shift] == [[ds.DEMO_SHIFT]]
    ksampler = next(v for v in export.values() if v["class_type"] == "KSampler")
    apply = next(k for k, v in export.items() if v["class_type"] == "IMA_ApplyModel")
    assert ksampler["inputs"]["model"] == [shift, 0] and export[shift]["inputs"]["model"] == [apply, 0]
    prompt, sampler = one_node_sampler(export)
    assert prompt[sampler]["class_type"] == "IMA_Wan22Sampler"
    assert prompt[sampler]["inputs"]["model"] == [shift, 0]
    assert prompt[shift]["inputs"] == {"shift": ds.DEMO_SHIFT, "model": export[apply]["inputs"]["model"]}
    links = [v for node in prompt.values() for v in node["inputs"].values() if isinstance(v, list)]
    assert links and all(src in prompt for src, _ in links)
