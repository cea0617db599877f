"""The real ComfyUI frontend in a real browser: Debian's chromium driven by Playwright for Python.

The browser is Debian's /usr/bin/chromium (``make setup`` installs it when missing and it can: as root);
Playwright's own browser downloads are never used. Where no browser can be had the tests are skipped, and
the skip is repeated in a banner at the end of the run so that it is never silent."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tools.comfy_path import REPO
from tools.demo_set import DEMO_NAMES
from tools.fixture_models import write_fixture_models
from tools.media import write_demo_inputs
from tools.server import ComfyServer

CHROMIUM = Path(os.environ.get("IMA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
OUT = REPO / "out" / "browser"  # the test's output folder (git-ignored): screenshots, console log, server log
VIEWPORT = {"width": 1920, "height": 1200}
DEVICE_SCALE = 1.5  # sharper text in the screenshots

# Frontend settings written before the server starts (user/default/comfy.settings.json), so that the page
# opens straight onto the canvas: no first-run template browser, no minimap or fps overlay over the graph,
# full-detail node drawing at any zoom (for readable screenshots), a short tooltip delay.
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,               # else the first visit opens the template browser
    "Comfy.Release.Version": "99.0.0",             # no "what's new" popup
    "Comfy.Release.Status": "skipped",
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,       # never switch to the text-less low-detail drawing
    "LiteGraph.Node.TooltipDelay": 100,
    "Comfy.Workflow.ShowMissingModelsWarning": False,  # no dialog: the tests read the missing-model list itself
    "Comfy.Workflow.ShowMissingNodesWarning": True,    # kept on: the test checks that this dialog stays shut
    "Comfy.Validation.Workflows": True,
    "Comfy.NodeBadge.NodeSourceBadgeMode": "Hide built-in",
}

# The 5B workflow's model files, by folder. The frontend_server fixture writes empty files under these names (so
# that nothing is flagged while the graph is checked); test_5b_workflow_offers_its_model_downloads takes them away
# and puts them back.
FIVE_B_FILES = {"wan2.2_ti2v_5B_fp16.safetensors": "diffusion_models", "wan2.2_vae.safetensors": "vae",
                "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "text_encoders",
                "motion_encoder_latest.safetensors": "im_animation",
                "im_animation_wan22_5b_modules.safetensors": "im_animation"}
_skipped: list[str] = []


def loud_skip(reason: str) -> None:
    msg = f"BROWSER TESTS SKIPPED: {reason}"
    _skipped.append(msg)
    print(f"\n{'!' * 100}\n{msg}\n{'!' * 100}", file=sys.stderr)
    pytest.skip(msg)


def pytest_terminal_summary(terminalreporter):
    if _skipped:
        terminalreporter.section("BROWSER TESTS SKIPPED", sep="!", red=True, bold=True)
        for msg in dict.fromkeys(_skipped):
            terminalreporter.write_line(msg, red=True, bold=True)


@pytest.fixture(scope="module")  # module: all of it is shut down before the other test folders run
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        loud_skip("the Python package `playwright` is not installed in this environment "
                  "(pip install playwright; never `playwright install`: these tests use Debian's chromium)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        loud_skip(f"no browser at {CHROMIUM}. Install Debian's chromium as root (`make setup` does it: "
                  "apt-get install -y chromium) or point IMA_CHROMIUM at a chromium binary")
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        except Exception as e:  # noqa: BLE001 - a browser that is there but cannot start is a failure
            pytest.fail(f"{CHROMIUM} is installed but Playwright cannot launch it: {e}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def frontend_server(browser):
    """The real ComfyUI with this pack, the fixture models under both the default and the demo names, the
    demo inputs, and frontend settings that skip the first-run dialogs."""
    srv = ComfyServer()
    write_fixture_models(srv.models)
    write_fixture_models(srv.models, names=DEMO_NAMES)
    write_demo_inputs(srv.base / "input")
    for file, folder in FIVE_B_FILES.items():
        (srv.models / folder).mkdir(parents=True, exist_ok=True)
        (srv.models / folder / file).write_bytes(b"")
    settings = srv.base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(FRONTEND_SETTINGS, indent=1))
    with srv:
        yield srv
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "server.log").write_text(srv.log())


@pytest.fixture(scope="session")
def out_dir() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


@pytest.fixture(scope="module")
def page(browser, frontend_server):
    """The page the server serves, with the app up (window.app, the graph canvas, this pack's node types)."""
    OUT.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=DEVICE_SCALE)
    # Nothing but the ComfyUI server: requests elsewhere (release notes, registry) fail at once, not by timeout.
    context.route(re.compile(r"^(?!" + re.escape(frontend_server.url) + r")(https?|wss?)://"),
                  lambda route: route.abort())
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    page.on("response", lambda r: r.status >= 400 and console.append(f"[http {r.status}] {r.url}"))
    page.console_log = console
    page.goto(frontend_server.url, wait_until="domcontentloaded")
    page.wait_for_function(
        "() => window.app && window.app.canvas && window.app.graph && window.LiteGraph"
        " && 'IMA_Wan22Sampler' in LiteGraph.registered_node_types"
        " && document.querySelector('canvas#graph-canvas')",
        timeout=60_000)
    # The app loads its start-up (default) workflow after it is up: wait for it, so that it cannot replace ours.
    page.wait_for_function("() => window.app.graph.nodes.length > 0", timeout=30_000)
    yield page
    (OUT / "console.log").write_text("\n".join(console))
    context.close()
