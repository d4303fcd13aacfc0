"""The Models tab's reproduce line, run as is in a shell, gives the same grid."""
import numpy as np
from PIL import Image

from tests.conftest import run_reproduce_line


def test_sample_reproduce_line_gives_the_same_grid(client, tmp_path):
    img_path, repro = client.predict("digits-gen", 3, 11, 6, "", 7.5, api_name="/sample")
    run_reproduce_line(repro, tmp_path)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")), np.asarray(Image.open(img_path)))
