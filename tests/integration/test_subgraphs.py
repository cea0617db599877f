"""The pack's subgraph blueprints, the demo and the 5B pipelines: ComfyUI serves each subgraphs/<name>.json of a
custom node pack at GET /global_subgraphs (listed by id, named by file) and /global_subgraphs/<id> (with the
file's text); the frontend lists it as a node under "Subgraph Blueprints" (tests/browser checks that, and runs
it). Here: the server lists each with this pack's name and serves it whole; each is its workflow as
scripts/build_workflows.py makes it; its sockets are the identity image, the driving video (and the 5B's prompt)
in, a video out; every node in it is one the server knows; the 5B's stock loaders carry their download links."""

import json

import pytest

from scripts import build_workflows as bw
from tools.comfy_path import REPO
from tools.server import PACK_DIR_NAME

SUBGRAPHS = REPO / "subgraphs"
NAMES = sorted(p.stem for p in SUBGRAPHS.glob("*.json"))


@pytest.fixture(scope="module")
def listed(server) -> dict:
    """name -> (id, entry) of this pack's blueprints in the server's listing."""
    listing = server.get("/global_subgraphs")
    ours = {e["name"]: (k, e) for k, e in listing.items() if e["info"]["node_pack"] == f"custom_nodes.{PACK_DIR_NAME}"}
    assert sorted(ours) == NAMES, listing
    return ours


def test_the_server_lists_and_serves_the_blueprints(server, listed):
    assert NAMES == sorted([bw.BLUEPRINT_NAME, bw.DEMO_BLUEPRINT_NAME]) == sorted(bw.BLUEPRINTS)
    for name, (key, entry) in listed.items():
        assert entry["source"] == "custom_node" and "path" not in entry, entry  # no machine path goes out
        served = server.get(f"/global_subgraphs/{key}")
        assert served["name"] == name and served["data"] == (SUBGRAPHS / f"{name}.json").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_each_blueprint_is_its_workflow_as_the_build_script_makes_it(name):
    ui = json.loads((REPO / "workflows" / bw.BLUEPRINTS[name][0]).read_text())
    made = bw.blueprint(ui, name)
    assert json.loads((SUBGRAPHS / f"{name}.json").read_text()) == made, (
        "subgraphs/ is not what scripts/build_workflows.py makes from workflows/: run `make workflows`")


@pytest.mark.parametrize("name", NAMES)
def test_the_blueprints_sockets_nodes_and_model_links(server, listed, name):
    info = server.get("/object_info")
    key, _ = listed[name]
    bp = json.loads(server.get(f"/global_subgraphs/{key}")["data"])
    (outer,) = bp["nodes"]
    (sub,) = bp["definitions"]["subgraphs"]
    assert outer["type"] == sub["id"] and sub["name"] == name and sub["description"]
    sockets = [(i["name"], i["type"]) for i in sub["inputs"]]
    prompt = [("prompt", "STRING")] if name == bw.BLUEPRINT_NAME else []
    assert sockets == [("identity_image", "IMAGE"), ("driving_video", "VIDEO"), *prompt]
    assert [(i["name"], i["type"]) for i in outer["inputs"]] == sockets
    assert [(o["name"], o["type"]) for o in sub["outputs"]] == [("video", "VIDEO")]
    assert [(o["name"], o["type"]) for o in outer["outputs"]] == [("video", "VIDEO")]

    nodes = {n["id"]: n for n in sub["nodes"]}
    unknown = [n["type"] for n in nodes.values() if n["type"] != "MarkdownNote" and n["type"] not in info]
    assert unknown == [], f"node types the server does not know: {unknown}"
    for kind in ("IMA_RetargetToIdentity", "IMA_Conditioning", "IMA_ApplyModel", "KSampler", "CreateVideo"):
        assert any(n["type"] == kind for n in nodes.values()), kind
    # Every link joins sockets that exist, of the type it says; each input socket feeds something, the output
    # is fed by the video.
    for lk in sub["links"]:
        if lk["origin_id"] == bw.SUBGRAPH_INPUT:
            assert sub["inputs"][lk["origin_slot"]]["type"] == lk["type"], lk
        else:
            assert nodes[lk["origin_id"]]["outputs"][lk["origin_slot"]]["type"] == lk["type"], lk
        if lk["target_id"] == bw.SUBGRAPH_OUTPUT:
            assert sub["outputs"][lk["target_slot"]]["type"] == lk["type"], lk
        else:
            target = nodes[lk["target_id"]]["inputs"][lk["target_slot"]]
            assert target["link"] == lk["id"] and target["type"] == lk["type"], (lk, target)
    for i, socket in enumerate(sub["inputs"]):
        fed = [lk for lk in sub["links"] if lk["origin_id"] == bw.SUBGRAPH_INPUT and lk["origin_slot"] == i]
        assert fed and sorted(lk["id"] for lk in fed) == sorted(socket["linkIds"]), socket
    (into_output,) = [lk for lk in sub["links"] if lk["target_id"] == bw.SUBGRAPH_OUTPUT]
    assert nodes[into_output["origin_id"]]["type"] == "CreateVideo"

    # The 5B's stock loaders offer their files' downloads (the frontend's missing-model list reads
    # properties.models); the demo's files come with the pack (make demo installs them).
    if name != bw.BLUEPRINT_NAME:
        assert not any(n["properties"].get("models") for n in nodes.values())
        return
    for n in nodes.values():
        if n["type"] in bw.WAN22_5B_MODELS:
            (model,) = n["properties"]["models"]
            assert model["name"] == n["widgets_values"][0] == bw.WAN22_5B_MODELS[n["type"]]["name"], n
            assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith("/" + model["name"])
    assert {n["type"] for n in nodes.values() if n["properties"].get("models")} == set(bw.WAN22_5B_MODELS)
