"""One real ComfyUI server for the integration tests, with the fixture models and demo inputs."""

import pytest

from tools.fixture_models import DEMO_NAMES, write_fixture_models
from tools.media import write_demo_inputs
from tools.server import ComfyServer


@pytest.fixture(scope="session")
def server():
    srv = ComfyServer()
    write_fixture_models(srv.models)
    write_fixture_models(srv.models, names=DEMO_NAMES)
    write_demo_inputs(srv.base / "input")
    with srv:
        yield srv
