"""Write workflows/*.json (UI format) and the subgraph blueprints subgraphs/*.json from the graph descriptions below,
laying out widget values in the order the real server's /object_info defines. Run it after changing a node's
inputs: `make workflows`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tools import demo_support as ds
from tools.media import DRIVING_NAME, LONG_DRIVING_NAME, LONG_FRAMES
from tools.server import ComfyServer
from tools.workflow import DYNAMIC_COMBO, input_specs, is_widget, option_specs

REPO = Path(__file__).resolve().parents[1]

UPLOAD_WIDGET = {"LoadImage": "image", "LoadVideo": "image"}  # the frontend's upload button keeps a value


# Where the 5B graph's stock loaders fetch their files: the frontend lists an absent file as a missing model with
# a download link from the loader node's properties.models (name, url, directory), as in ComfyUI's official
# Wan2.2 TI2V-5B template (video_wan2_2_5B_ti2v.json), from which these three entries are copied.
WAN22_5B_MODELS = {
    "UNETLoader": {"name": "wan2.2_ti2v_5B_fp16.safetensors", "directory": "diffusion_models",
                   "url": "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
                          "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors"},
    "VAELoader": {"name": "wan2.2_vae.safetensors", "directory": "vae",
                  "url": "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
                         "vae/wan2.2_vae.safetensors"},
    "CLIPLoader": {"name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "directory": "text_encoders",
                   "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                          "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
}


GRAPH_NOTE = (
    "## Sampling\n\nApply IM-Animation patches the model and IM-Animation Conditioning builds the prompts and the "
    "latent, so any sampler works (KSampler here; SamplerCustomAdvanced, other packs' samplers). Trim Video Latent "
    "drops the identity's latent frame before decoding. For clips longer than the modules' training clips, use "
    "Wan2.2 IM-Animation Sampler instead of the conditioning and the sampler: it samples overlapping windows.")


DEMO_SAMPLER = dict(width=0, height=0, length=0, seed=0, steps=8, cfg=1.0, sampler_name="euler", scheduler="simple")
LONG_NOTE = (
    "## A long clip, the host's way\n\n"
    f"The driving video here is {LONG_FRAMES} frames; the demo modules were trained on {ds.DEMO_FRAMES}. WAN "
    "Context Windows (a stock node; this graph sets the options of ComfyUI v0.33, v0.8's node has fewer) makes the "
    f"KSampler sample overlapping windows of {ds.DEMO_FRAMES} frames (overlap 4): each window gets its own slice "
    "of the retargeted motion and expression and starts from the identity. Set context_length to the modules' "
    "training length. On v0.8 use the Wan2.2 IM-Animation Sampler's window_frames instead (README, Long clips).")


def model_note(files: list[tuple[str, str]], extra: str) -> str:
    rows = "\n".join(f"| `{name}` | `ComfyUI/models/{folder}/` |" for name, folder in files)
    return f"## Model files\n\n| file | put it in |\n|---|---|\n{rows}\n\n{extra}\n\n{GRAPH_NOTE}"


def widget_values(name: str, type_, options: dict, given: dict, prefix: str = "") -> list:
    """The saved values of one widget as the frontend lays them out: its value (given, else the default, else the
    first choice), "fixed" for a seed's control_after_generate, then the widgets a dynamic combo's selected option
    adds (named "<name>.<input>")."""
    key = prefix + name
    if type_ == DYNAMIC_COMBO:
        choices = [o["key"] for o in options["options"]]
    else:
        choices = type_ if isinstance(type_, list) else options.get("options") or [None]
    out = [given.get(key, options.get("default", choices[0] if choices else None))]
    if options.get("control_after_generate"):
        out.append("fixed")
    if type_ == DYNAMIC_COMBO:
        for sub, sub_type, sub_options in option_specs(options, out[0]):
            if is_widget(sub_type, sub_options):
                out += widget_values(sub, sub_type, sub_options, given, key + ".")
    return out


COLUMN_X = {-1: -640, 0: 0, 1: 460, 2: 900, 3: 1360, 4: 1820, 5: 2240}
COLUMN_WIDTH = {-1: 560, 0: 400, 1: 380, 2: 400, 3: 400, 4: 360, 5: 420}
GAP = 60


def node_height(info: dict, widgets: int) -> int:
    """About the height the frontend draws a node with: title, one row per socket pair, one per widget."""
    sockets = max(sum(1 for _, t, o in input_specs(info) if not is_widget(t, o)), len(info["output"]))
    return 40 + 22 * sockets + 26 * widgets


def lay_out(nodes: list[dict], object_info: dict) -> None:
    """Stack the nodes of each column top to bottom in listed order, GAP apart."""
    y = dict.fromkeys(COLUMN_X, 0)
    for n in nodes:
        col = n.pop("col")
        if "size" not in n:
            info = object_info[n["type"]]
            widgets = sum(1 for _, t, o in input_specs(info) if is_widget(t, o))
            n["size"] = (COLUMN_WIDTH[col], node_height(info, widgets))
        n["pos"] = (COLUMN_X[col], y[col])
        y[col] += n["size"][1] + GAP


def graph(nodes: list[dict], object_info: dict) -> dict:
    """nodes: {id, type, pos, size?, widgets: {name: value}, links: {input: (src_id, src_slot)}, title?}"""
    lay_out(nodes, object_info)
    by_id = {n["id"]: n for n in nodes}
    links, out_links = [], {}
    for n in nodes:
        for name, (src, slot) in n.get("links", {}).items():
            lid = len(links) + 1
            src_type = object_info[by_id[src]["type"]]["output"][slot]
            links.append([lid, src, slot, n["id"], None, src_type, name])
            out_links.setdefault((src, slot), []).append(lid)
    ui_nodes = []
    for order, n in enumerate(nodes):
        node = {"id": n["id"], "type": n["type"], "pos": list(n["pos"]), "size": list(n.get("size", (320, 120))),
                "flags": {}, "order": order, "mode": 0, "properties": {"Node name for S&R": n["type"]}}
        if n.get("title"):
            node["title"] = n["title"]
        if n.get("models"):
            node["properties"]["models"] = n["models"]
        if n["type"] == "MarkdownNote":
            node.update(inputs=[], outputs=[], widgets_values=[n["text"]], color="#432", bgcolor="#653")
            ui_nodes.append(node)
            continue
        info = object_info[n["type"]]
        inputs, values = [], []
        for name, type_, options in input_specs(info):
            widget = is_widget(type_, options)
            if widget:
                values += widget_values(name, type_, options, n.get("widgets", {}))
                if UPLOAD_WIDGET.get(n["type"]) and name in ("image", "file"):
                    values.append(UPLOAD_WIDGET[n["type"]])
            link = next((lk for lk in links if lk[3] == n["id"] and lk[6] == name), None)
            if link or not widget:
                entry = {"name": name, "type": "COMBO" if isinstance(type_, list) else type_,
                         "link": link[0] if link else None}
                if widget:
                    entry["widget"] = {"name": name}
                if link:
                    link[4] = len(inputs)
                inputs.append(entry)
        outputs = []
        for slot, (otype, oname) in enumerate(zip(info["output"], info["output_name"], strict=True)):
            outputs.append({"name": oname, "type": otype, "links": out_links.get((n["id"], slot), []),
                            "slot_index": slot})
        node.update(inputs=inputs, outputs=outputs, widgets_values=values)
        ui_nodes.append(node)
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes,
            "links": [lk[:6] for lk in links], "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8,
            "offset": [40, 40]}}, "version": 0.4}


def im_animation_nodes(dit: str, vae: str, tokenizer: str, modules: str, sampler: dict, note: str,
                       with_text: bool, shift: float | None = None, driving: str = DRIVING_NAME,
                       context_windows: tuple[int, int] | None = None) -> list[dict]:
    """The graph's nodes (see graph()). with_text: the text encoder and both prompts, and ModelSamplingSD3 at
    shift 8 before Apply IM-Animation. shift: a ModelSamplingSD3 at this flow shift between Apply IM-Animation
    and the KSampler (the shift the DiT was trained at). driving: the driving video's file. context_windows:
    (context_length, context_overlap) in frames of the host's WAN Context Windows node (static windows,
    pyramid fusion, FreeNoise), put just before the KSampler (v0.33 and later)."""
    nodes = [
        {"id": 20, "type": "MarkdownNote", "col": -1, "size": (560, 460), "text": note},
        {"id": 1, "type": "UNETLoader", "col": 0, "widgets": {"unet_name": dit}},
        {"id": 2, "type": "VAELoader", "col": 0, "widgets": {"vae_name": vae}},
        {"id": 3, "type": "IMA_LoadMotionTokenizer", "col": 0, "widgets": {"tokenizer_name": tokenizer}},
        {"id": 4, "type": "IMA_LoadModules", "col": 0, "widgets": {"modules_name": modules}},
        {"id": 5, "type": "LoadImage", "col": 0, "size": (400, 360), "title": "Identity image",
         "widgets": {"image": "ima_demo_identity.png"}},
        {"id": 6, "type": "LoadVideo", "col": 0, "size": (400, 360), "title": "Driving video",
         "widgets": {"file": driving}},
        {"id": 7, "type": "GetVideoComponents", "col": 1, "links": {"video": (6, 0)}},
        {"id": 8, "type": "IMA_EncodeDrivingVideo", "col": 1,
         "links": {"motion_tokenizer": (3, 0), "frames": (7, 0), "fps": (7, 2)}},
        {"id": 9, "type": "IMA_RetargetToIdentity", "col": 2,
         "links": {"im_animation_modules": (4, 0), "motion_tokens": (8, 0), "identity_image": (5, 0), "vae": (2, 0)},
         "widgets": {"width": sampler.pop("width"), "height": sampler.pop("height"), "length": sampler.pop("length")}},
        {"id": 10, "type": "IMA_ExpressionEncode", "col": 2,
         "links": {"im_animation_modules": (4, 0), "frames": (7, 0), "motion_tokens": (8, 0)}},
        {"id": 11, "type": "IMA_ApplyModel", "col": 3, "links": {"model": (1, 0), "modules": (4, 0)}},
        {"id": 19, "type": "IMA_Conditioning", "col": 3,
         "links": {"retargeted_motion": (9, 0), "expression": (10, 0)}},
        {"id": 21, "type": "KSampler", "col": 4,
         "links": {"model": (11, 0), "positive": (19, 0), "negative": (19, 1), "latent_image": (19, 2)},
         "widgets": sampler},
        {"id": 22, "type": "TrimVideoLatent", "col": 5, "links": {"samples": (21, 0), "trim_amount": (19, 3)}},
        {"id": 12, "type": "VAEDecode", "col": 5, "links": {"samples": (22, 0), "vae": (2, 0)}},
        {"id": 13, "type": "CreateVideo", "col": 5, "links": {"images": (12, 0), "fps": (7, 2)}},
        {"id": 14, "type": "SaveVideo", "col": 5, "size": (420, 440),
         "links": {"video": (13, 0)}, "widgets": {"filename_prefix": "video/im_animation"}},
    ]
    if with_text:
        nodes[1:1] = [  # listed first: they sit at the top of their columns
            {"id": 15, "type": "ModelSamplingSD3", "col": 1, "widgets": {"shift": 8.0},
             "links": {"model": (1, 0)}},
            {"id": 16, "type": "CLIPLoader", "col": 0,
             "widgets": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan"}},
            {"id": 17, "type": "CLIPTextEncode", "col": 2, "size": (400, 180), "title": "Positive prompt",
             "links": {"clip": (16, 0)}, "widgets": {"text": "a person dancing, natural motion, high quality"}},
            {"id": 18, "type": "CLIPTextEncode", "col": 2, "size": (400, 180), "title": "Negative prompt",
             "links": {"clip": (16, 0)}, "widgets": {"text": "blurry, distorted limbs, extra limbs, static"}},
        ]
        next(n for n in nodes if n["id"] == 11)["links"]["model"] = (15, 0)
        for n in nodes:
            if n["type"] in WAN22_5B_MODELS:
                m = WAN22_5B_MODELS[n["type"]]
                n["models"] = [{k: m[k] for k in ("name", "url", "directory")}]  # the template's key order
        next(n for n in nodes if n["id"] == 19)["links"].update(positive=(17, 0), negative=(18, 0))
    if shift is not None:
        ksampler = next(i for i, n in enumerate(nodes) if n["id"] == 21)
        nodes.insert(ksampler, {"id": 23, "type": "ModelSamplingSD3", "col": 4, "widgets": {"shift": shift},
                                "links": {"model": (11, 0)}})  # listed first: it sits above the KSampler
        nodes[ksampler + 1]["links"]["model"] = (23, 0)
    if context_windows is not None:
        ksampler = next(i for i, n in enumerate(nodes) if n["id"] == 21)
        length, overlap = context_windows
        nodes.insert(ksampler, {"id": 24, "type": "WanContextWindowsManual", "col": 4,
                                "title": "WAN Context Windows (v0.33+)",
                                "widgets": {"context_length": length, "context_overlap": overlap,
                                            "context_schedule": "standard_static"},
                                "links": {"model": nodes[ksampler]["links"]["model"]}})
        nodes[ksampler + 1]["links"]["model"] = (24, 0)
    return nodes


# The demo and the 5B graphs as subgraph blueprints (subgraphs/<name>.json: ComfyUI v0.33 serves a pack's subgraphs/
# folder at GET /global_subgraphs, and its frontend lists each file as a node under "Subgraph Blueprints"). The
# loaders, prompts and sampling go inside; the identity image, the driving video (and the 5B's prompt) come in, the
# video goes out.
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20  # the frontend's ids of a subgraph's input and output nodes
# Each socket: (name, type, the graph node it stands for, or (node, widget) it feeds).
IMAGE_AND_VIDEO = [("identity_image", "IMAGE", 5, None), ("driving_video", "VIDEO", 6, None)]
BLUEPRINT_OUTPUT = ("video", "VIDEO", 14)  # what the graph's Save Video node received
BLUEPRINT_NAME = "IM-Animation (Wan2.2 5B)"
DEMO_BLUEPRINT_NAME = "IM-Animation (demo, CPU)"
BLUEPRINTS = {  # name: (the workflow it is made of, its description, its input sockets)
    BLUEPRINT_NAME: (
        "im_animation_wan22_5b.json",
        "Animates an identity image with the motion and expressions of a driving video (IM-Animation on Wan2.2 "
        "TI2V-5B): a 704x1280, 81-frame video. Open the subgraph to pick the model files, size, length and sampler; "
        "its note lists where each file goes.",
        [*IMAGE_AND_VIDEO, ("prompt", "STRING", None, (17, "text"))]),
    DEMO_BLUEPRINT_NAME: (
        "im_animation_demo.json",
        "Animates an identity image with the motion of a driving video on this pack's small demo model set "
        "(make demo installs it): a 128x128 video as long as the driving clip, in seconds on a CPU, no text "
        "encoder. Open the subgraph to pick the model files and sampler; its note lists where each file goes.",
        IMAGE_AND_VIDEO),
}


def blueprint_id(*parts) -> str:
    """A stable UUID (the frontend keys subgraphs and their sockets by UUID): the same file on every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-im-animation/" + "/".join(map(str, parts))))


def blueprint(ui: dict, name: str) -> dict:
    """The blueprint ``name`` (BLUEPRINTS) of the UI-format graph ``ui`` (graph()), in the frontend's format (as
    ComfyUI's own blueprints/): the graph nodes its input sockets stand for and the output node (BLUEPRINT_OUTPUT)
    taken out and their links moved to the subgraph's input and output, a widget a socket feeds (the prompt's text)
    fed from a subgraph input; one node of the subgraph's type at the top level, showing those widgets."""
    _, description, inputs = BLUEPRINTS[name]
    sub_id = blueprint_id(name)
    stand_ins = {src: i for i, (_, _, src, _) in enumerate(inputs) if src is not None}
    out_name, out_type, sink = BLUEPRINT_OUTPUT
    nodes = [json.loads(json.dumps(n)) for n in ui["nodes"] if n["id"] not in (*stand_ins, sink)]
    by_id = {n["id"]: n for n in nodes}
    links, link_ids = [], {i: [] for i in range(len(inputs) + 1)}
    for lid, src, slot, dst, dst_slot, type_ in ui["links"]:
        if src in stand_ins:
            src, slot = SUBGRAPH_INPUT, stand_ins[src]
            link_ids[slot].append(lid)
        if dst == sink:
            dst, dst_slot = SUBGRAPH_OUTPUT, 0
            link_ids[len(inputs)].append(lid)
        links.append({"id": lid, "origin_id": src, "origin_slot": slot, "target_id": dst, "target_slot": dst_slot,
                      "type": type_})
    next_link = max(lk["id"] for lk in links) + 1
    for i, (_, type_, _, widget) in enumerate(inputs):
        if widget is None:
            continue
        node_id, widget_name = widget
        node = by_id[node_id]
        node["inputs"].append({"name": widget_name, "type": type_, "widget": {"name": widget_name},
                               "link": next_link})
        links.append({"id": next_link, "origin_id": SUBGRAPH_INPUT, "origin_slot": i, "target_id": node_id,
                      "target_slot": len(node["inputs"]) - 1, "type": type_})
        link_ids[i].append(next_link)
        next_link += 1
    for n in nodes:
        for out in n.get("outputs", []):
            out["links"] = [lid for lid in out["links"] if lid in {lk["id"] for lk in links}]
    left = min(n["pos"][0] for n in nodes) - 260
    right = max(n["pos"][0] + n["size"][0] for n in nodes) + 80
    sockets = [{"id": blueprint_id(name, "input", in_name), "name": in_name, "type": type_, "linkIds": link_ids[i],
                "localized_name": in_name, "pos": [left + 140, 20 + 20 * i]}
               for i, (in_name, type_, _, _) in enumerate(inputs)]
    definition = {
        "id": sub_id, "version": 1, "revision": 0, "config": {}, "name": name,
        "state": {"lastGroupId": 0, "lastNodeId": max(by_id), "lastLinkId": next_link - 1, "lastRerouteId": 0},
        "inputNode": {"id": SUBGRAPH_INPUT, "bounding": [left, 0, 160, 40 + 20 * len(inputs)]},
        "outputNode": {"id": SUBGRAPH_OUTPUT, "bounding": [right, 0, 120, 60]},
        "inputs": sockets,
        "outputs": [{"id": blueprint_id(name, "output", out_name), "name": out_name, "type": out_type,
                     "linkIds": link_ids[len(inputs)], "localized_name": out_name, "pos": [right + 20, 20]}],
        "widgets": [], "nodes": nodes, "groups": [], "links": links, "extra": {},
        "category": "IM-Animation", "description": description,
    }
    shown = [by_id[w[0]]["widgets_values"][0] for *_, w in inputs if w is not None]
    outer = {
        "id": max(by_id) + 1, "type": sub_id, "pos": [0, 0], "size": [400, 200], "flags": {}, "order": 0, "mode": 0,
        "inputs": [{"name": in_name, "localized_name": in_name, "type": type_, "link": None,
                    **({"widget": {"name": in_name}} if widget else {})}
                   for in_name, type_, _, widget in inputs],
        "outputs": [{"name": out_name, "localized_name": out_name, "type": out_type, "links": []}],
        "properties": {"proxyWidgets": [["-1", in_name] for in_name, _, _, widget in inputs if widget]},
        "widgets_values": shown, "title": name,
    }
    return {"revision": 0, "last_node_id": outer["id"], "last_link_id": 0, "nodes": [outer], "links": [],
            "groups": [], "definitions": {"subgraphs": [definition]}, "config": {},
            "extra": {"BlueprintDescription": description,
                      "BlueprintSearchAliases": ["im-animation", "character animation", "motion transfer",
                                                 "image to video", "wan2.2"]},
            "version": 0.4}


def main() -> None:
    from tools.fixture_models import write_fixture_models

    server = ComfyServer()
    write_fixture_models(server.models)
    with server:
        info = server.get("/object_info")
    wan_note = model_note(
        [("wan2.2_ti2v_5B_fp16.safetensors", "diffusion_models"), ("wan2.2_vae.safetensors", "vae"),
         ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
         ("motion_encoder_latest.safetensors (+ config.yaml)", "im_animation"),
         ("im_animation_wan22_5b_modules.safetensors", "im_animation")],
        "The frontend offers the first three for download (ComfyUI's official Wan2.2 5B links). The motion encoder "
        "is the released IM-Animation checkpoint, published by the paper's authors in the public repository "
        "`rabberk/IM-Animation` (download it from there by hand). The modules file is trained with this "
        "project's trainer: no public IM-Animation weights exist for it (see README, Limitations).")
    demo_note = model_note(
        [("ima_demo_wan.safetensors", "diffusion_models"), ("ima_demo_wan21_vae.safetensors", "vae"),
         ("ima_demo_motion_tokenizer.safetensors", "im_animation"),
         ("ima_demo_modules.safetensors", "im_animation")],
        "The small demo model set of this project (`make demo` installs and runs it), trained on "
        f"{ds.DEMO_FRAMES}-frame clips of {ds.DEMO_SIZE}x{ds.DEMO_SIZE}. It runs on a CPU and needs no text encoder. "
        f"ModelSamplingSD3 sets the sampling's flow shift to {ds.DEMO_SHIFT:g}, the shift the demo DiT was trained "
        "at (ComfyUI's default for Wan models is 8).")
    demo_files = ("ima_demo_wan.safetensors", "ima_demo_wan21_vae.safetensors",
                  "ima_demo_motion_tokenizer.safetensors", "ima_demo_modules.safetensors")
    workflows = {
        "im_animation_wan22_5b.json": graph(im_animation_nodes(
            "wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors", "motion_encoder_latest.safetensors",
            "im_animation_wan22_5b_modules.safetensors",
            dict(width=704, height=1280, length=81, seed=0, steps=20, cfg=5.0, sampler_name="uni_pc",
                 scheduler="simple"), wan_note, with_text=True), info),
        "im_animation_demo.json": graph(im_animation_nodes(*demo_files, dict(DEMO_SAMPLER), demo_note,
                                                           with_text=False, shift=ds.DEMO_SHIFT), info),
        "im_animation_demo_long.json": graph(im_animation_nodes(
            *demo_files, dict(DEMO_SAMPLER), demo_note + "\n\n" + LONG_NOTE, with_text=False, shift=ds.DEMO_SHIFT,
            driving=LONG_DRIVING_NAME, context_windows=(ds.DEMO_FRAMES, 4)), info),
    }
    for name, wf in workflows.items():
        (REPO / "workflows" / name).write_text(json.dumps(wf, indent=1) + "\n")
        print("wrote", REPO / "workflows" / name)
    for name, (source, _, _) in BLUEPRINTS.items():
        path = REPO / "subgraphs" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(blueprint(workflows[source], name), indent=1) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
