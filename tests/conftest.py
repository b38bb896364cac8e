import os

import pytest
import torch

# Two cores are shared between the test process and anything running beside it: one thread each
# avoids oversubscription.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GENSTUDIO_DATA", os.path.abspath(os.path.join(__file__, "..", "..", "..", "shared", "data")))

from tests.helpers import make_toy_folder  # noqa: E402  (after the settings above)


@pytest.fixture
def toy_data(tmp_path):
    return make_toy_folder(tmp_path / "toy")
