"""fastconv beside PyTorch and scikit-learn in one process: each brings an OpenMP
runtime (or a copy of one); using all three, in any order, must neither crash nor hang."""

import os
import subprocess
import sys
import tempfile

import pytest

import fastconv

SCRIPT = """
import numpy as np
{imports}
import fastconv
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 8, 24, 24)).astype(np.float32)
w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
fastconv.set_num_threads(2)
y = fastconv.conv2d(x, w, padding=1)
import torch
torch.set_num_threads(2)
ty = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
from sklearn.cluster import KMeans
labels = KMeans(n_clusters=3, n_init=2, random_state=0).fit_predict(rng.standard_normal((2000, 8)))
y2 = fastconv.conv2d(x, w, padding=1)
assert np.array_equal(y, y2)
assert np.abs(y - ty).max() < 1e-3 * np.abs(ty).max(), np.abs(y - ty).max()
assert labels.shape == (2000,)
print("ok")
"""


@pytest.mark.parametrize("imports", ["import torch\nimport sklearn", "import sklearn\nimport torch",
                                     "", "import fastconv"])
def test_fastconv_torch_and_sklearn_in_one_process(imports):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    # Run outside the source tree: `python -c` puts the working folder first on sys.path.
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(imports=imports)],
                         capture_output=True, text=True, env=env, timeout=300,
                         cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("ok")
