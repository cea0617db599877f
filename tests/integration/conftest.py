"""One real ComfyUI server for the integration tests, with the fixture models and demo inputs; and servers of
their own for the tests of the committed demo model set."""


import pytest

from tools import demo_support as ds
from tools.comfy_path import REPO
from tools.demo import SOURCES, install_models
from tools.demo_set import DEMO_NAMES
from tools.fixture_models import write_fixture_models
from tools.media import DRIVING_NAME, IDENTITY_NAME, write_demo_inputs
from tools.server import ComfyServer


@pytest.fixture(scope="session")
def server():
    srv = ComfyServer()
    write_fixture_models(srv.models)
    write_fixture_models(srv.models, names=DEMO_NAMES)
    write_demo_inputs(srv.base / "input")
    with srv:
        yield srv


@pytest.fixture(scope="session")
def demo_models_server(tmp_path_factory):
    """make(name, item=None) -> a ComfyServer (not started) in a fresh folder, with the committed demo model set
    (models/) installed and ``item``'s identity image and driving clip (default: the demo pair) as the input
    files the demo workflow reads."""

    def make(name: str, item: dict | None = None) -> ComfyServer:
        missing = [str(p.relative_to(REPO)) for p in SOURCES.values() if not p.is_file()]
        assert not missing, f"the committed demo model set is incomplete: {missing}"
        server = ComfyServer(base=tmp_path_factory.mktemp(name))
        assert install_models(server.models)
        ds.write_pair_inputs(server.base / "input", ds.demo_pair() if item is None else item, IDENTITY_NAME,
                             DRIVING_NAME)
        return server

    return make
