import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models and small tensors: one intra-op thread is fastest, and steady on a busy 2-core machine
    (two threads spin-wait on each other). Test modules opt in with pytestmark = usefixtures("one_thread")."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
