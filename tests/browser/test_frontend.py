"""Each workflow in workflows/ in the real ComfyUI frontend (the comfyui-frontend-package ComfyUI pins), in
Debian's chromium: loaded through the page's own ``app.loadGraphData``; no missing node types; every
IM-Animation node drawn with its sockets and widgets (values as saved) and its help (description and input
tooltips) shown on hover; the frontend's own ``app.graphToPrompt()`` accepted by POST /prompt and executed to
an output video; a screenshot of the laid-out graph kept (out/browser/, docs/images/graph_<name>.png) and a
template-browser thumbnail written beside the workflow (workflows/<name>.jpg); the frontend's API-format export
committed in workflows/api/<name>.json (what make demo submits) checked to be current; the 5B workflow's loaders
offering their model downloads; the subgraph blueprint (subgraphs/) listed, placed, expanded and run."""

from __future__ import annotations

import io
import json
import os
import shutil

import pytest
from browser.conftest import FIVE_B_FILES
from PIL import Image

from tools.comfy_path import REPO
from tools.media import read_video_info
from tools.server import PACK_DIR_NAME, assert_ok
from tools.workflow import adapt_5b_prompt_to_fixtures, input_specs, is_widget, ui_to_api

WORKFLOWS = REPO / "workflows"
DOCS_IMAGES = REPO / "docs" / "images"
# Screenshots and thumbnails go to the test's output folder; the tracked copies (docs/images/, the template
# thumbnails beside the workflows) are rewritten only on request: `make images` sets this.
UPDATE_TRACKED_IMAGES = os.environ.get("IMA_UPDATE_IMAGES") == "1"
WORKFLOW_NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
API_DIR = WORKFLOWS / "api"  # the frontend's own API-format export of each workflow (its "Export (API)")
UPDATE_API = os.environ.get("IMA_UPDATE_API") == "1"  # `make workflows` rewrites the exports
THUMBNAIL_SIZE = 512  # the template browser shows extension templates as <name>.jpg, square cards


def with_steps(prompt: dict, steps: int) -> dict:
    """The prompt with each KSampler at ``steps`` steps: the 49-frame run's four context windows on the fixture
    models cost a minute at the workflow's 8 (its quality is tested on the trained models in
    tests/integration/test_host_long_clips.py)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = steps
    return prompt


RUNS = {  # workflow -> (prompt adaptation, expected (frames, width, height) of the saved video)
    "im_animation_demo_long": (lambda p: with_steps(p, 2), (49, 128, 128)),
    "im_animation_demo": (lambda p: p, (17, 128, 128)),
    "im_animation_wan22_5b": (adapt_5b_prompt_to_fixtures, (9, 64, 96)),
}

LOAD_JS = """async (graph) => {
  if (!window.__imaMissing) {
    window.__imaMissing = [];
    app.registerExtension({name: 'ima.test.missingNodes', afterConfigureGraph(missing) {
      window.__imaMissing.push((missing || []).map(m => typeof m === 'string' ? m : m.type));
    }});
  }
  window.__imaMissing.length = 0;
  await app.loadGraphData(graph);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const nodes = app.graph.nodes.map(n => ({
    id: n.id, type: n.type, title: n.title, mode: n.mode, has_errors: !!n.has_errors,
    registered: n.type in LiteGraph.registered_node_types,
    size: [n.size[0], n.size[1]],
    inputs: (n.inputs || []).map(i => ({name: i.name, type: i.type, link: i.link, widget: i.widget?.name ?? null})),
    outputs: (n.outputs || []).map(o => ({name: o.name, type: o.type, links: o.links ? o.links.length : 0})),
    widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type, value: w.value, tooltip: w.tooltip ?? null})),
  }));
  return {
    nodes, links: app.graph.links instanceof Map ? app.graph.links.size : Object.keys(app.graph.links).length,
    missing: window.__imaMissing.flat(),
    missingDialog: !!document.querySelector('.comfy-missing-nodes'),
    dialogs: [...document.querySelectorAll('.p-dialog')].map(d => d.innerText.slice(0, 300)),
  };
}"""

# The view fitted to the whole graph (as the frontend computes node sizes), with margins around it; in focus mode
# (set by the test) only the zoom controls at the bottom right and the menu button at the top right remain.
FIT_JS = """([top, right, bottom, left]) => {
  const H = LiteGraph.NODE_TITLE_HEIGHT, ns = app.graph.nodes;
  const x0 = Math.min(...ns.map(n => n.pos[0])), y0 = Math.min(...ns.map(n => n.pos[1] - H));
  const x1 = Math.max(...ns.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...ns.map(n => n.pos[1] + n.size[1]));
  const el = app.canvas.canvas.getBoundingClientRect(), w = el.width - left - right, h = el.height - top - bottom;
  const ds = app.canvas.ds, s = Math.min(w / (x1 - x0), h / (y1 - y0));
  ds.scale = s;
  ds.offset[0] = (left + (w - s * (x1 - x0)) / 2) / s - x0;
  ds.offset[1] = (top + (h - s * (y1 - y0)) / 2) / s - y0;
  app.canvas.setDirty(true, true);
  return [ds.scale, ds.offset[0], ds.offset[1]];
}"""

# Where (page coordinates) to point to get a node's title, one input socket, one widget.
POINTS_JS = """(id) => {
  const n = app.graph.nodes.find(n => String(n.id) === String(id)), r = app.canvas.canvas.getBoundingClientRect();
  const toPage = ([x, y]) => {
    const o = app.canvas.ds.convertOffsetToCanvas([x, y]);
    return [r.left + o[0], r.top + o[1]];
  };
  const title = toPage([n.pos[0] + 40, n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2]);
  const sockets = (n.inputs || []).map((inp, i) => inp.widget ? null : [inp.name, toPage(n.getConnectionPos(true, i))])
    .filter(Boolean);
  const widgets = (n.widgets || []).filter(w => w.name !== 'control_after_generate').map(w =>
    [w.name, toPage([n.pos[0] + n.size[0] / 2, n.pos[1] + (w.last_y ?? w.y ?? 0) + LiteGraph.NODE_WIDGET_HEIGHT / 2])]);
  return {title, sockets, widgets};
}"""


@pytest.fixture(scope="module")
def object_info(frontend_server):
    return frontend_server.get("/object_info")


def saved_video(server, entry):
    for out in entry["outputs"].values():
        for item in out.get("images", []):
            if item["filename"].endswith(".mp4"):
                return server.base / "output" / item["subfolder"] / item["filename"]
    raise AssertionError(f"no video in outputs: {entry['outputs']}")


def hover_text(page, point) -> str:
    """The frontend's node tooltip shown after pointing at a canvas position ('' when none appears)."""
    page.mouse.move(5, page.viewport_size["height"] - 5)  # away, so that the tooltip closes
    page.mouse.move(point[0] + 1, point[1] + 1)
    page.mouse.move(*point)
    try:
        page.wait_for_selector(".node-tooltip", timeout=2_000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: no tooltip
        return ""
    return page.inner_text(".node-tooltip").strip()


def check_ima_nodes(ui: dict, loaded: dict, object_info: dict) -> None:
    """Every IM-Animation node of the file is on the canvas with the node definition's sockets and widgets,
    widget values as saved, links where the file has them."""
    by_id = {str(n["id"]): n for n in loaded["nodes"]}  # the frontend's ids are numbers (1.35) or strings (1.49)
    ima = [n for n in ui["nodes"] if n["type"].startswith("IMA_")]
    assert len(ima) >= 6, [n["type"] for n in ima]
    for saved in ima:
        node = by_id.get(str(saved["id"]))
        assert node is not None and node["type"] == saved["type"], f"{saved['type']} ({saved['id']}) not on the canvas"
        info = object_info[saved["type"]]
        specs = input_specs(info)
        widget_names = [n for n, t, o in specs if is_widget(t, o)]
        expected_widgets = []
        for name, type_, opt in specs:
            if is_widget(type_, opt):
                expected_widgets.append(name)
                if opt.get("control_after_generate"):
                    expected_widgets.append("control_after_generate")
        got_widgets = [w["name"] for w in node["widgets"]]
        assert got_widgets == expected_widgets, f"{saved['type']}: widgets {got_widgets} != {expected_widgets}"
        values = [w["value"] for w in node["widgets"]]
        assert values == saved["widgets_values"], f"{saved['type']}: {values} != {saved['widgets_values']}"
        sockets = {i["name"]: i for i in node["inputs"]}
        for name, type_, _ in specs:
            if name not in widget_names:
                assert name in sockets, f"{saved['type']}: no input socket '{name}'"
                assert sockets[name]["type"] == type_, f"{saved['type']}.{name}: {sockets[name]['type']} != {type_}"
        for inp in saved.get("inputs", []):
            if inp.get("link") is not None:
                assert sockets[inp["name"]]["link"] == inp["link"], f"{saved['type']}.{inp['name']} lost its link"
        assert [o["type"] for o in node["outputs"]] == info["output"], saved["type"]
        assert node["size"][0] >= 200 and node["size"][1] >= 26 * (1 + len(got_widgets)) * 0.8, (saved["type"], node)


def check_help_on_hover(page, ui: dict, object_info: dict) -> None:
    """The node description shows when pointing at a node's title, an input's tooltip at its socket or widget
    (the first socket and the first widget of each node: every input's tooltip is checked in the node definitions
    by test_every_pack_node_has_help_in_the_frontend; pointing takes time)."""
    for saved in (n for n in ui["nodes"] if n["type"].startswith("IMA_")):
        info = object_info[saved["type"]]
        tips = {name: opt.get("tooltip", "") for name, _, opt in input_specs(info)}
        points = page.evaluate(POINTS_JS, saved["id"])
        got = hover_text(page, points["title"])
        assert got == info["description"].strip(), f"{saved['type']} title hover shows {got!r}"
        for name, point in points["sockets"][:1] + points["widgets"][:1]:
            got = hover_text(page, point)
            assert got == tips[name].strip(), f"{saved['type']}.{name} hover shows {got!r}, not its tooltip"


def fitted_screenshot(page, margins, clip=None) -> bytes:
    """A screenshot of the whole graph fitted into the page less the margins [top, right, bottom, left] (CSS px).
    The view is fitted twice: the frontend may still move it once right after a load."""
    page.mouse.move(page.viewport_size["width"] // 2, 2)  # off every node: no tooltip, no hover highlight
    page.evaluate(FIT_JS, margins)
    page.wait_for_timeout(300)
    view = page.evaluate(FIT_JS, margins)
    page.wait_for_timeout(200)
    png = page.screenshot(clip=clip)
    assert page.evaluate("() => [app.canvas.ds.scale, ...app.canvas.ds.offset]") == pytest.approx(view)
    return png


def screenshots(page, name: str, out_dir) -> None:
    """graph_<name>.png (the page as users see it, in focus mode) to the test's output folder and docs/images/;
    the template thumbnail workflows/<name>.jpg: the graph fitted into a square (the template browser shows
    thumbnails in square cards, at most 256 px)."""
    page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
    try:
        png = fitted_screenshot(page, [48, 24, 72, 24])  # the menu button above, the zoom controls below
        width, height = page.viewport_size["width"], page.viewport_size["height"]
        side = height - 48 - 72
        left = (width - side) // 2
        square = fitted_screenshot(page, [48, width - left - side, 72, left],
                                   clip={"x": left, "y": 48, "width": side, "height": side})
    finally:
        page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
    (out_dir / f"graph_{name}.png").write_bytes(png)
    thumb = Image.open(io.BytesIO(square)).convert("RGB").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=85, optimize=True)
    (out_dir / f"{name}.jpg").write_bytes(buf.getvalue())
    if UPDATE_TRACKED_IMAGES:
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out_dir / f"graph_{name}.png", DOCS_IMAGES / f"graph_{name}.png")
        (WORKFLOWS / f"{name}.jpg").write_bytes(buf.getvalue())


def check_export(page, name: str, prompt: dict) -> None:
    """workflows/api/<name>.json is the frontend's export of workflows/<name>.json: rewritten with IMA_UPDATE_API=1
    (make workflows), else it must equal what the frontend gives now."""
    path = API_DIR / f"{name}.json"
    if UPDATE_API:
        API_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(prompt, indent=1) + "\n")
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? 'unknown'")
    assert path.is_file() and json.loads(path.read_text()) == prompt, (
        f"workflows/api/{name}.json is not the frontend's ({version}) export of workflows/{name}.json: "
        "run `make workflows` on the default host")


def test_every_pack_node_has_help_in_the_frontend(page, object_info):
    """The frontend's node definitions of every node of this pack (not only those in the workflows): in the
    IM-Animation category, with a description and a tooltip on every input."""
    module = f"custom_nodes.{PACK_DIR_NAME}"
    ours = sorted(k for k, v in object_info.items() if v.get("python_module") == module)
    assert len(ours) >= 6, ours
    defs = page.evaluate("""(types) => Object.fromEntries(types.map(t => {
      const d = LiteGraph.registered_node_types[t]?.nodeData;
      const tooltips = d && Object.fromEntries(Object.entries(d.inputs || {}).map(([n, i]) => [n, i.tooltip]));
      return [t, d ? {category: d.category, description: d.description, tooltips} : null];
    }))""", ours)
    for node_id in ours:
        d = defs[node_id]
        assert d is not None, f"{node_id} is not registered in the frontend"
        assert d["category"] == "IM-Animation", (node_id, d["category"])
        assert d["description"], f"{node_id} has no description in the frontend"
        specs = input_specs(object_info[node_id])
        names = [n for n, _, _ in specs]
        # An upload combo (Load Driving Video's picker, like the stock Load Video) gets the frontend's own
        # "upload" button widget beside it; that is not an input of the node.
        uploads = any(o.get(k) for _, _, o in specs for k in ("image_upload", "video_upload", "audio_upload"))
        tooltips = {n: t for n, t in d["tooltips"].items() if not (uploads and n == "upload")}
        assert sorted(tooltips) == sorted(names), (node_id, d["tooltips"], names)
        assert all(tooltips.values()), f"{node_id}: inputs without a tooltip: {tooltips}"


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_in_the_frontend(page, frontend_server, object_info, out_dir, name):
    assert name in RUNS, f"workflows/{name}.json has no run set up in this test"
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    loaded = page.evaluate(LOAD_JS, ui)

    # No missing node types: none reported by the frontend's loader, none unregistered, no missing-nodes dialog.
    assert loaded["missing"] == [], f"frontend reports missing node types {loaded['missing']}"
    bad = [(n["id"], n["type"]) for n in loaded["nodes"] if not n["registered"] or n["has_errors"]]
    assert bad == [], f"nodes the frontend cannot draw: {bad}"
    assert not loaded["missingDialog"], loaded["dialogs"]
    assert loaded["dialogs"] == [], f"dialogs opened on load: {loaded['dialogs']}"
    assert sorted(str(n["id"]) for n in loaded["nodes"]) == sorted(str(n["id"]) for n in ui["nodes"])
    assert loaded["links"] == len(ui["links"])
    check_ima_nodes(ui, loaded, object_info)

    screenshots(page, name, out_dir)
    if name == "im_animation_demo":
        check_help_on_hover(page, ui, object_info)

    # The frontend's own prompt: same inputs as the Python converter gives, accepted and executed by the server.
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    ours = ui_to_api(ui, object_info)
    assert set(prompt) == set(ours)
    for key, node in ours.items():
        assert prompt[key]["class_type"] == node["class_type"]
        # Declared inputs (a dynamic combo's "<name>.<input>" among them), not frontend-only widgets such as
        # LoadVideo's preview.
        declared = {n for n, _, _ in input_specs(object_info[node["class_type"]])}
        inputs = {k: v for k, v in prompt[key]["inputs"].items() if k.split(".")[0] in declared}
        assert inputs == node["inputs"], (node["class_type"], prompt[key]["inputs"], node["inputs"])
    check_export(page, name, prompt)
    adapt, expected = RUNS[name]
    entry = frontend_server.run(adapt(prompt))
    assert_ok(entry)
    assert read_video_info(saved_video(frontend_server, entry)) == expected


def test_workflows_in_the_template_browser(page, frontend_server, out_dir):
    """ComfyUI serves a pack's workflows/ as templates: the template browser lists this pack under Extensions,
    shows each workflow with its <name>.jpg thumbnail, and opens one when clicked."""
    listing = frontend_server.get("/workflow_templates")
    assert sorted(listing.get(PACK_DIR_NAME, [])) == WORKFLOW_NAMES, listing
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator('[role="dialog"]', has=page.locator('[data-testid="template-workflows-content"]'))
    dialog.get_by_text(PACK_DIR_NAME, exact=True).first.click()  # the pack's entry under Extensions
    for name in WORKFLOW_NAMES:
        img = page.locator(f'[data-testid="template-workflow-{name}"] img')
        img.wait_for(timeout=10_000)
        page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=10_000)
        src, width = img.evaluate("el => [el.src, el.naturalWidth]")
        assert "default-template" not in src and width == THUMBNAIL_SIZE, f"{name}: thumbnail {src} ({width} px)"
    page.mouse.move(5, 5)
    page.wait_for_timeout(200)
    (out_dir / "template_browser.png").write_bytes(dialog.screenshot())
    if UPDATE_TRACKED_IMAGES:
        shutil.copyfile(out_dir / "template_browser.png", DOCS_IMAGES / "template_browser.png")

    page.evaluate("() => app.graph.clear()")
    page.locator('[data-testid="template-workflow-im_animation_demo"]').click()
    page.wait_for_function("() => !document.querySelector('[data-testid=template-workflows-content]')"
                           " && app.graph.nodes.some(n => n.type === 'IMA_Conditioning')", timeout=15_000)
    ui = json.loads((WORKFLOWS / "im_animation_demo.json").read_text())
    assert page.evaluate("() => app.graph.nodes.length") == len(ui["nodes"])


DOWNLOADABLE = {"wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"}

# The frontend's missing-model list (its Pinia store "missingModel", which the Errors panel shows) after a load.
MISSING_MODELS_JS = """() => {
  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  const store = pinia._s.get('missingModel');
  if (!store) return null;
  return (store.missingModelCandidates || []).map(c => ({name: c.name, url: c.url ?? null,
    directory: c.directory ?? null, node: String(c.nodeId), widget: c.widgetName}));
}"""


SETTING_JS = "([k, v]) => app.extensionManager.setting.set(k, v)"
# The names among ``names`` that the Errors panel's missing-model group shows (the smallest element holding all its
# Download buttons and a "locate node" button; not the page, whose Markdown note names every file too).
LISTED_JS = """(names) => {
  const downloads = document.querySelectorAll('[data-testid="missing-model-download"]').length;
  let el = document.querySelector('[data-testid="missing-model-download"]');
  while (el && !(el.querySelectorAll('[data-testid="missing-model-download"]').length === downloads
                 && el.querySelector('[data-testid="missing-model-locate"]'))) el = el.parentElement;
  return names.filter(n => el && el.textContent.includes(n));
}"""


def shown_missing_models(page, out_dir) -> tuple[set[str], set[str]]:
    """Through the error overlay's "see errors" button, the Errors panel: the file names it lists and those it
    offers a Download button for. Its screenshot goes to out/browser/missing_models.png."""
    page.click('[data-testid="error-overlay-see-errors"]', timeout=15_000)
    page.wait_for_selector('[data-testid="missing-model-download"]', timeout=15_000)
    page.wait_for_timeout(300)
    page.mouse.move(5, page.viewport_size["height"] - 5)
    (out_dir / "missing_models.png").write_bytes(page.screenshot())
    if UPDATE_TRACKED_IMAGES:
        shutil.copyfile(out_dir / "missing_models.png", DOCS_IMAGES / "missing_models.png")
    labels = page.eval_on_selector_all('[data-testid="missing-model-download"]',
                                       "els => els.map(e => e.getAttribute('aria-label') || '')")
    listed = page.evaluate(LISTED_JS, sorted(FIVE_B_FILES))
    return set(listed), {label.removeprefix("Download ") for label in labels}


def test_5b_workflow_offers_its_model_downloads(page, frontend_server, out_dir):
    """Opened with its model files absent, the 5B workflow lists each as a missing model (the frontend's list and
    its Errors panel), the DiT, VAE and text encoder with the download links of its loaders' properties.models
    and a Download button; with the files there nothing is flagged."""
    if page.evaluate("() => !window.app.refreshMissingModels"):
        pytest.fail("this frontend has no missing-model pipeline (app.refreshMissingModels): run the browser tests "
                    "on the default host (v0.33, frontend 1.49)")
    ui = json.loads((WORKFLOWS / "im_animation_wan22_5b.json").read_text())
    embedded = {m["name"]: m for n in ui["nodes"] for m in n.get("properties", {}).get("models", [])}
    assert set(embedded) == DOWNLOADABLE, sorted(embedded)

    def open_with_files(present: bool):
        for file, folder in FIVE_B_FILES.items():
            path = frontend_server.models / folder / file
            path.unlink(missing_ok=True)
            if present:
                path.write_bytes(b"")
        page.evaluate("async () => { await app.reloadNodeDefs(); }")
        return page.evaluate(LOAD_JS, ui), page.evaluate(MISSING_MODELS_JS)

    page.evaluate(SETTING_JS, ["Comfy.Workflow.ShowMissingModelsWarning", True])  # the warning a user sees
    try:
        loaded, missing = open_with_files(present=False)
        listed, downloads = shown_missing_models(page, out_dir)
        assert listed == set(FIVE_B_FILES) and downloads == DOWNLOADABLE, (listed, downloads)
        got = {m["name"]: m for m in missing}
        assert set(got) == set(FIVE_B_FILES), missing
        for name, m in got.items():
            if name in DOWNLOADABLE:
                assert (m["url"], m["directory"]) == (embedded[name]["url"], embedded[name]["directory"]), m
                assert m["url"].startswith("https://huggingface.co/Comfy-Org/") and m["url"].endswith("/" + name)
            else:
                assert m["url"] is None, m  # no download link exists for these (see the workflow's note)
        flagged = {str(n["id"]) for n in loaded["nodes"] if n["has_errors"]}
        assert flagged == {m["node"] for m in missing}, (flagged, missing)
    finally:
        page.evaluate(SETTING_JS, ["Comfy.Workflow.ShowMissingModelsWarning", False])
        loaded, missing = open_with_files(present=True)
    assert missing == [], missing
    assert [n["id"] for n in loaded["nodes"] if n["has_errors"]] == []


# subgraphs/<name>.json, made by scripts/build_workflows.py: name -> (the workflow it is made of, what it is given)
BLUEPRINTS = {"IM-Animation (Wan2.2 5B)": ("im_animation_wan22_5b", "a person waving, steady camera"),
              "IM-Animation (demo, CPU)": ("im_animation_demo", None)}

# The frontend's blueprint list (its subgraph store, filled at start-up from GET /global_subgraphs) and its node
# definitions: what the node library and the search box show under "Subgraph Blueprints".
BLUEPRINTS_JS = """() => {
  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  return pinia._s.get('subgraph').subgraphBlueprints.map(d => ({name: d.name, display_name: d.display_name,
    category: d.category, description: d.description, python_module: d.python_module,
    inputs: Object.fromEntries(Object.entries(d.input?.required ?? {}).map(([k, v]) => [k, v[0]])),
    outputs: d.output}));
}"""

# The blueprint put on an empty canvas as the frontend's addNodeOnGraph does (its subgraph store's copy of the file,
# deserialised by the canvas), then a Load Image, a Load Video and a Save Video wired to its sockets, and the
# prompt (if it takes one) typed into its widget. Returns what the subgraph node shows and holds.
PLACE_BLUEPRINT_JS = """([name, image, video, text]) => {
  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  app.graph.clear();
  const bp = pinia._s.get('subgraph').getBlueprint(name);
  const made = app.canvas._deserializeItems({nodes: bp.nodes, subgraphs: bp.definitions?.subgraphs},
                                            {position: [600, 100]});
  const node = made.nodes.values().next().value;
  const add = (type, pos, widgets) => {
    const n = LiteGraph.createNode(type);
    n.pos = pos;
    app.graph.add(n);
    for (const [k, v] of Object.entries(widgets)) n.widgets.find(w => w.name === k).value = v;
    return n;
  };
  add('LoadImage', [0, 0], {image}).connect(0, node, 0);
  add('LoadVideo', [0, 400], {file: video}).connect(0, node, 1);
  node.connect(0, add('SaveVideo', [1200, 100], {filename_prefix: 'video/blueprint'}), 0);
  if (text !== null) node.widgets.find(w => w.name === 'prompt').value = text;
  app.canvas.setDirty(true, true);
  return {isSubgraph: !!node.subgraph, title: node.title,
    inputs: node.inputs.map(i => [i.name, i.type]), outputs: node.outputs.map(o => [o.name, o.type]),
    widgets: (node.widgets ?? []).map(w => w.name), inner: node.subgraph ? node.subgraph.nodes.map(n => n.type) : []};
}"""


@pytest.mark.parametrize("blueprint", sorted(BLUEPRINTS))
def test_the_blueprint_is_listed_expands_and_runs(page, frontend_server, out_dir, blueprint):
    """The frontend lists each of subgraphs/'s blueprints under Subgraph Blueprints (named by its file, with its
    description and sockets); placed on the canvas it is one subgraph node holding its workflow's graph; wired to
    an image, a video and a Save Video, the frontend's own prompt expands it into that graph's nodes, with the
    prompt typed into the node (the 5B's) in the positive text encoder, and the server runs it (on the fixture
    models) to a video."""
    workflow, text = BLUEPRINTS[blueprint]
    bp = json.loads((REPO / "subgraphs" / f"{blueprint}.json").read_text())
    (sub,) = bp["definitions"]["subgraphs"]
    page.wait_for_function(f"() => ({BLUEPRINTS_JS})().some(d => d.display_name === {json.dumps(blueprint)})",
                           timeout=30_000)
    (listed,) = [d for d in page.evaluate(BLUEPRINTS_JS) if d["display_name"] == blueprint]
    # A pack's blueprint is keyed by the id the server lists it under (GET /global_subgraphs), named by its file.
    (key,) = [k for k, e in frontend_server.get("/global_subgraphs").items() if e["name"] == blueprint]
    assert listed["name"] == f"SubgraphBlueprint.{key}", listed
    assert listed["category"] == "Subgraph Blueprints/IM-Animation", listed
    assert listed["description"] == bp["extra"]["BlueprintDescription"]
    sockets = [["identity_image", "IMAGE"], ["driving_video", "VIDEO"], *([["prompt", "STRING"]] if text else [])]
    assert listed["inputs"] == dict(sockets)
    assert listed["outputs"] == ["VIDEO"]

    placed = page.evaluate(PLACE_BLUEPRINT_JS, [listed["name"], "ima_demo_identity.png", "ima_demo_driving.mp4", text])
    assert placed["isSubgraph"] and placed["title"] == blueprint, placed
    assert placed["inputs"] == sockets and placed["outputs"] == [["video", "VIDEO"]], placed
    assert ("prompt" in placed["widgets"]) == (text is not None), placed
    assert sorted(placed["inner"]) == sorted(n["type"] for n in sub["nodes"])
    (out_dir / f"blueprint_{workflow}.png").write_bytes(fitted_screenshot(page, [48, 24, 72, 24]))

    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    inner = sorted(v["class_type"] for k, v in prompt.items() if ":" in k)  # a subgraph's nodes are "<node>:<id>"
    assert inner == sorted(n["type"] for n in sub["nodes"] if n["type"] != "MarkdownNote"), inner
    if text is not None:
        encoders = [v["inputs"]["text"] for v in prompt.values() if v["class_type"] == "CLIPTextEncode"]
        assert text in encoders, encoders
    by_type = {v["class_type"]: v for v in prompt.values()}
    for kind in ("IMA_RetargetToIdentity", "GetVideoComponents", "SaveVideo"):
        assert kind in by_type, kind
    load_image = next(k for k, v in prompt.items() if v["class_type"] == "LoadImage")
    assert by_type["IMA_RetargetToIdentity"]["inputs"]["identity_image"] == [load_image, 0]
    adapt, expected = RUNS[workflow]
    entry = frontend_server.run(adapt(prompt))
    assert_ok(entry)
    assert read_video_info(saved_video(frontend_server, entry)) == expected
