"""The pack's workflows as ComfyUI templates: ComfyUI serves a custom node pack's example workflows from its
`example_workflows/` (or `workflows/`, `examples/`, ...) folder: GET /workflow_templates lists them by pack
folder name, and /api/workflow_templates/<pack>/<file> serves the JSON and the thumbnail. The frontend
(1.35) shows an extension template's thumbnail from <name>.jpg beside <name>.json."""

import json

from PIL import Image

from tools.comfy_path import REPO
from tools.server import PACK_DIR_NAME

WORKFLOWS = REPO / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def fetch(server, path):
    import urllib.request

    with urllib.request.urlopen(server.url + path, timeout=30) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def test_both_workflows_are_listed_as_templates(server):
    assert {"im_animation_demo", "im_animation_wan22_5b"} <= set(NAMES)
    listing = server.get("/workflow_templates")
    assert sorted(listing[PACK_DIR_NAME]) == NAMES, listing


def test_each_template_is_served_with_a_jpeg_thumbnail(server):
    for name in NAMES:
        status, _, body = fetch(server, f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.json")
        assert status == 200 and json.loads(body) == json.loads((WORKFLOWS / f"{name}.json").read_text())
        assert (WORKFLOWS / f"{name}.jpg").is_file(), f"workflows/{name}.jpg (the template thumbnail) is missing"
        status, ctype, body = fetch(server, f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.jpg")
        assert status == 200 and ctype == "image/jpeg", (name, status, ctype)
        with Image.open(WORKFLOWS / f"{name}.jpg") as img:
            assert img.format == "JPEG" and img.size[0] >= 256 and img.size[1] >= 256, (name, img.format, img.size)
