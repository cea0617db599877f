"""Convert a UI-format workflow (what users save and share) into the API format that POST /prompt takes,
using the server's /object_info to know which inputs are widgets and in which order.

For tests and tools only: what users run (make demo, the headless examples) is the frontend's own export in
workflows/api/. The browser tests check this converter against the real frontend's ``app.graphToPrompt()``."""

from __future__ import annotations

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # a combo whose selected option adds widgets "<name>.<input>" after it
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
# The other dynamic input types of the newer hosts (sockets that grow or change type): not converted here.
UNSUPPORTED_DYNAMIC = {"COMFY_AUTOGROW_V3", "COMFY_MATCHTYPE_V3", "COMFY_DYNAMICSLOT_V3"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload")  # the frontend adds an upload button widget
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def input_specs(info: dict) -> list[tuple[str, object, dict]]:
    """(name, type, options) of a node's inputs in the order the frontend lays out widgets."""
    spec = info["input"]
    order = info.get("input_order") or {k: list(spec.get(k, {})) for k in ("required", "optional")}
    return _specs(spec, order)


def _specs(spec: dict, order: dict) -> list[tuple[str, object, dict]]:
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            entry = spec[section][name]
            out.append((name, entry[0], entry[1] if len(entry) > 1 else {}))
    return out


def option_specs(options: dict, key) -> list[tuple[str, object, dict]]:
    """The inputs that a dynamic combo's option ``key`` adds (required, then optional, as the frontend adds them)."""
    option = next((o for o in options["options"] if o["key"] == key), None)
    if option is None:
        raise ValueError(f"{key!r} is not an option of this dynamic combo: {[o['key'] for o in options['options']]}")
    inputs = option.get("inputs") or {}
    return _specs(inputs, {k: list(inputs.get(k) or {}) for k in ("required", "optional")})


def is_widget(type_, options: dict) -> bool:
    if isinstance(type_, str) and type_ in UNSUPPORTED_DYNAMIC:
        raise NotImplementedError(f"dynamic input type {type_} is not handled by this converter")
    return isinstance(type_, list) or (type_ in WIDGET_TYPES and not options.get("forceInput"))


def take_widget_values(specs, values: list, inputs: dict, prefix: str = "") -> None:
    """Move the saved widget values into ``inputs`` by name, in the frontend's widget order: each widget's value,
    then control_after_generate's and an upload button's (not inputs), then a dynamic combo's added widgets."""
    for name, type_, options in specs:
        if not is_widget(type_, options) or not values:
            continue
        key = prefix + name
        inputs[key] = values.pop(0)
        if options.get("control_after_generate") and values:
            values.pop(0)
        if any(options.get(k) for k in UPLOAD_OPTIONS) and values:
            values.pop(0)
        if type_ == DYNAMIC_COMBO:
            take_widget_values(option_specs(options, inputs[key]), values, inputs, key + ".")


def ui_to_api(ui: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}  # id -> [id, from, from_slot, to, to_slot, type]
    api = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is muted or bypassed; not supported here")
        if node["type"] not in object_info:
            raise KeyError(f"node type {node['type']} (node {node['id']}) is not installed on the server")
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        take_widget_values(input_specs(object_info[node["type"]]), values, inputs)
        for name, link_id in linked.items():  # a link replaces a widget's value
            link = links[link_id]
            inputs[name] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def check_links(ui: dict, object_info: dict) -> list[str]:
    """Problems with the workflow's links: unknown types, slot types that do not match the node definitions."""
    problems = []
    nodes = {n["id"]: n for n in ui["nodes"]}
    for lid, src, src_slot, dst, dst_slot, ltype in ui["links"]:
        s, d = nodes[src], nodes[dst]
        if s["type"] in FRONTEND_ONLY or d["type"] in FRONTEND_ONLY:
            continue
        out_type = object_info[s["type"]]["output"][src_slot]
        in_name = d["inputs"][dst_slot]["name"]
        in_type = dict((n, t) for n, t, _ in input_specs(object_info[d["type"]])).get(in_name)
        if in_type is None:
            problems.append(f"link {lid}: {d['type']} has no input '{in_name}'")
            continue
        in_type = "COMBO" if isinstance(in_type, list) else in_type
        if out_type != in_type and "*" not in (out_type, in_type):
            problems.append(f"link {lid}: {s['type']}[{src_slot}] gives {out_type}, "
                            f"{d['type']}.{in_name} takes {in_type}")
        if ltype != out_type:
            problems.append(f"link {lid}: declared type {ltype} but {s['type']}[{src_slot}] gives {out_type}")
    return problems


def adapt_5b_prompt_to_fixtures(prompt: dict) -> dict:
    """The 5B graph (API format) made runnable on this machine: the tiny fixture files in place of the real
    ones, the text-encoder nodes bypassed (umt5-xxl cannot be made small: ComfyUI builds it at a fixed size;
    IM-Animation Conditioning then gives the empty-text context), 2 steps, a CPU-sized 64x96 video of 9 frames."""
    from .fixture_models import DIT_NAME, MODULES_NAME, TOKENIZER_NAME, VAE_NAME

    text_nodes = [k for k, v in prompt.items() if v["class_type"] in ("CLIPLoader", "CLIPTextEncode")]
    assert len(text_nodes) == 3, text_nodes
    for k in text_nodes:
        del prompt[k]
    conditioning = next(v for v in prompt.values() if v["class_type"] == "IMA_Conditioning")
    del conditioning["inputs"]["positive"], conditioning["inputs"]["negative"]
    next(v for v in prompt.values() if v["class_type"] == "KSampler")["inputs"]["steps"] = 2
    swap = {"UNETLoader": ("unet_name", DIT_NAME), "VAELoader": ("vae_name", VAE_NAME),
            "IMA_LoadMotionTokenizer": ("tokenizer_name", TOKENIZER_NAME),
            "IMA_LoadModules": ("modules_name", MODULES_NAME)}
    for node in prompt.values():
        if node["class_type"] in swap:
            key, value = swap[node["class_type"]]
            node["inputs"][key] = value
        if node["class_type"] == "IMA_RetargetToIdentity":
            node["inputs"].update(width=64, height=96, length=9)
    return prompt


def one_node_sampler(prompt: dict) -> tuple[dict, str]:
    """A workflow's composable sampling (Apply IM-Animation, IM-Animation Conditioning, KSampler, Trim Video
    Latent; API format) replaced by the one-node Wan2.2 IM-Animation Sampler with the same settings, which
    samples long clips in windows. Returns the new prompt and the sampler's node id (its output takes the place
    of the trimmed latent). Model nodes between Apply IM-Animation and the KSampler (the demo's ModelSamplingSD3)
    stay, now on Apply's input model: the sampler applies IM-Animation to their output."""
    prompt = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in prompt.items()}
    ids = {v["class_type"]: k for k, v in prompt.items()
           if v["class_type"] in ("IMA_ApplyModel", "IMA_Conditioning", "KSampler", "TrimVideoLatent")}
    apply, cond, ksampler = (prompt.pop(ids[c])["inputs"] for c in ("IMA_ApplyModel", "IMA_Conditioning", "KSampler"))
    trim = ids["TrimVideoLatent"]
    applied = [ids["IMA_ApplyModel"], 0]
    for node in prompt.values():
        if node["inputs"].get("model") == applied:
            node["inputs"]["model"] = apply["model"]
    model = apply["model"] if ksampler["model"] == applied else ksampler["model"]
    inputs = {"model": model, "retargeted_motion": cond["retargeted_motion"]}
    inputs.update({k: cond[k] for k in ("expression", "positive", "negative") if k in cond})
    inputs.update({k: ksampler[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler")})
    inputs.update(window_frames=81, overlap_frames=16)  # the node's defaults
    prompt[trim] = {"class_type": "IMA_Wan22Sampler", "inputs": inputs}
    return prompt, trim
