"""fastconv.viz: make_grid against hand-made grids (and torchvision's when installed),
and the feature figure of both LeNet-5 variants."""

import sys

import numpy as np
import pytest

from fastconv import nn
from fastconv.data import CLASS_NAMES
from fastconv.models import LeNet5
from fastconv.viz import PLOT_HINT, _pick, make_grid, save_feature_figure

# ------------------------------------------------------------------- make_grid by hand


def one_pixel_batch(n):
    """n images of 2 channels x 1 x 1: image k holds k + 1 and 10 (k + 1)."""
    k = np.arange(1, n + 1, dtype=np.float64)
    return np.stack([k, 10 * k], axis=1)[:, :, None, None]


def test_layout_padding_and_pad_value():
    grid = make_grid(one_pixel_batch(5), nrow=2, padding=1, pad_value=-1)
    o = -1
    expected = np.array([
        [o, o, o, o, o],
        [o, 1, o, 2, o],
        [o, o, o, o, o],
        [o, 3, o, 4, o],
        [o, o, o, o, o],
        [o, 5, o, o, o],
        [o, o, o, o, o],
    ], dtype=np.float64)
    assert grid.shape == (2, 7, 5)
    np.testing.assert_array_equal(grid[0], expected)
    np.testing.assert_array_equal(grid[1], np.where(expected > 0, 10 * expected, o))


def test_nrow_beyond_the_batch_makes_one_row():
    grid = make_grid(one_pixel_batch(3), nrow=8, padding=2)
    z = 0
    np.testing.assert_array_equal(grid[0], [
        [z, z, z, z, z, z, z, z, z, z, z],
        [z, z, z, z, z, z, z, z, z, z, z],
        [z, z, 1, z, z, 2, z, z, 3, z, z],
        [z, z, z, z, z, z, z, z, z, z, z],
        [z, z, z, z, z, z, z, z, z, z, z],
    ])


def test_rectangular_images_without_padding_tile_in_row_major_order():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 2, 2, 3))
    pad = np.full((2, 2, 3), 7.0)
    grid = make_grid(images, nrow=3, padding=0, pad_value=7)
    expected = np.concatenate([
        np.concatenate([images[0], images[1], images[2]], axis=2),
        np.concatenate([images[3], images[4], pad], axis=2),
    ], axis=1)
    np.testing.assert_array_equal(grid, expected)


def test_one_channel_becomes_three_equal_channels():
    images = np.arange(8.0).reshape(2, 1, 2, 2)
    grid = make_grid(images, padding=0)
    assert grid.shape == (3, 2, 4)
    for c in range(3):
        np.testing.assert_array_equal(grid[c], [[0, 1, 4, 5], [2, 3, 6, 7]])


@pytest.mark.parametrize("shape, out_shape", [
    ((2, 3), (3, 2, 3)),         # (H, W): one grey image
    ((1, 2, 3), (3, 2, 3)),      # (1, H, W): one grey image
    ((2, 2, 3), (2, 2, 3)),      # (C, H, W) with 2 channels stays 2 channels
    ((1, 1, 2, 3), (3, 2, 3)),   # a batch of one
    ((1, 4, 2, 3), (4, 2, 3)),
])
def test_a_single_image_comes_back_unpadded(shape, out_shape):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    grid = make_grid(image, padding=5, pad_value=9)
    assert grid.shape == out_shape
    plane = image.reshape(-1, 2, 3)
    np.testing.assert_array_equal(grid, np.broadcast_to(plane, out_shape))


def test_a_list_of_images_is_a_batch():
    images = [np.full((1, 1, 1), v) for v in (1.0, 2.0)]
    np.testing.assert_array_equal(make_grid(images, padding=1)[0], [[0, 0, 0, 0, 0],
                                                                    [0, 1, 0, 2, 0],
                                                                    [0, 0, 0, 0, 0]])


def pair_of_rows():
    """Two 1 x 2 grey images: (1, 3) and (5, 7)."""
    return np.array([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])


@pytest.mark.parametrize("options, expected", [
    ({}, [1, 3, 5, 7]),
    ({"normalize": True}, [0, 1 / 3, 2 / 3, 1]),                      # the batch's min, max
    ({"normalize": True, "value_range": (2, 6)}, [0, 0.25, 0.75, 1]),  # clamped, then scaled
    ({"normalize": True, "value_range": [2, 6], "scale_each": True}, [0, 0.25, 0.75, 1]),
    ({"normalize": True, "scale_each": True}, [0, 1, 0, 1]),          # each image's own
    ({"scale_each": True}, [1, 3, 5, 7]),                             # only with normalize
    ({"value_range": (2, 6)}, [1, 3, 5, 7]),
])
def test_normalize(options, expected):
    grid = make_grid(pair_of_rows(), padding=0, **options)
    np.testing.assert_allclose(grid[0, 0], expected, rtol=1e-12)


def test_normalize_a_constant_batch_gives_zeros():
    grid = make_grid(np.full((2, 1, 2, 2), 3.0), normalize=True, padding=0)
    np.testing.assert_array_equal(grid, np.zeros((3, 2, 4)))


def test_normalize_divides_a_range_narrower_than_1e_5_by_1e_5():
    images = np.array([[[[0.0, 1e-6]]], [[[2e-6, 4e-6]]]])
    grid = make_grid(images, normalize=True, padding=0)
    np.testing.assert_allclose(grid[0, 0], [0, 0.1, 0.2, 0.4])


def test_normalize_leaves_the_input_alone_and_padding_unscaled():
    images = pair_of_rows()
    before = images.copy()
    grid = make_grid(images, padding=1, pad_value=5, normalize=True)
    np.testing.assert_array_equal(images, before)
    assert grid[0, 0, 0] == 5


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32), (np.float16, np.float32), (np.float64, np.float64),
    (np.uint8, np.float64), (np.int64, np.float64), (np.bool_, np.float64),
])
def test_result_dtype(dtype, expected):
    images = np.ones((2, 1, 2, 2), dtype)
    assert make_grid(images).dtype == expected
    assert make_grid(images, normalize=True).dtype == expected


def test_uint8_normalize_maps_0_255_to_0_1():
    images = np.array([[[[0, 255]]], [[[51, 102]]]], np.uint8)
    grid = make_grid(images, padding=0, normalize=True, value_range=(0, 255))
    np.testing.assert_allclose(grid[0, 0], [0, 1, 0.2, 0.4])


@pytest.mark.parametrize("call, error, match", [
    (lambda: make_grid(np.ones((2, 1, 1, 2, 2))), ValueError, "nchw"),
    (lambda: make_grid(np.ones(3)), ValueError, "nchw"),
    (lambda: make_grid(np.ones((0, 1, 2, 2))), ValueError, "nchw"),
    (lambda: make_grid(np.ones((2, 2), complex)), TypeError, "nchw"),
    (lambda: make_grid(None), TypeError, "nchw"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), nrow=0), ValueError, "nrow"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), nrow=2.0), TypeError, "nrow"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), padding=-1), ValueError, "padding"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), padding=True), TypeError, "padding"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), normalize=1), TypeError, "normalize"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), scale_each="yes"), TypeError, "scale_each"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), value_range=(0, 1, 2)), TypeError, "value_range"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), value_range=1), TypeError, "value_range"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), value_range=("0", 1)), TypeError, "value_range"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), value_range=(1, 0)), ValueError, "value_range"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), value_range=(0, np.inf)), ValueError,
     "value_range"),
    (lambda: make_grid(np.ones((2, 1, 2, 2)), pad_value="white"), TypeError, "pad_value"),
])
def test_argument_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------- make_grid against torchvision

TORCHVISION_CASES = [
    ((5, 1, 3, 4), {}),
    ((5, 1, 3, 4), {"nrow": 2, "padding": 1, "pad_value": 0.5}),
    ((7, 3, 2, 5), {"nrow": 3, "padding": 0}),
    ((4, 2, 3, 3), {"nrow": 8, "padding": 3, "normalize": True}),
    ((4, 3, 3, 3), {"normalize": True, "scale_each": True}),
    ((4, 1, 3, 3), {"normalize": True, "value_range": (-0.5, 0.5)}),
    ((4, 1, 3, 3), {"normalize": True, "value_range": (-0.5, 0.5), "scale_each": True}),
    ((1, 3, 4, 4), {"padding": 4}),
    ((3, 4, 4), {"normalize": True}),
    ((1, 4, 4), {}),
    ((4, 4), {"normalize": True}),
]


@pytest.mark.parametrize("shape, options", TORCHVISION_CASES)
def test_matches_torchvision(shape, options):
    utils = pytest.importorskip("torchvision.utils")
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(len(shape) + sum(shape)).normal(size=shape).astype(np.float32)
    expected = utils.make_grid(torch.from_numpy(images.copy()), **options).numpy()
    grid = make_grid(images, **options)
    assert grid.shape == expected.shape
    np.testing.assert_allclose(grid, expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ the feature figure


def test_pick_shows_the_first_image_of_each_class_first():
    labels = np.array([3, 3, 1, 4, 1, 5])
    np.testing.assert_array_equal(_pick(labels, 6, 3), [0, 2, 3])
    np.testing.assert_array_equal(_pick(labels, 6, 5), [0, 2, 3, 5, 1])
    np.testing.assert_array_equal(_pick(labels, 6, 9), [0, 2, 3, 5, 1, 4])
    np.testing.assert_array_equal(_pick(None, 6, 4), [0, 1, 2, 3])


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 1, 28, 28)).astype(np.float32)
    return images, np.array([9, 9, 0, 2, 7, 1])


@pytest.fixture
def capture(monkeypatch):
    """capture(render): the list of Figures saved from now on, kept for inspection.

    With render=False nothing is drawn or written: the tests that only read the
    figure's texts skip the slow part.
    """
    figure = pytest.importorskip("matplotlib.figure")
    original = figure.Figure.savefig

    def start(render):
        saved = []

        def savefig(self, *args, **kwargs):
            saved.append(self)
            if render:
                original(self, *args, **kwargs)

        monkeypatch.setattr(figure.Figure, "savefig", savefig)
        return saved

    return start


def read_png(path):
    image = pytest.importorskip("matplotlib.image")
    return image.imread(str(path))


@pytest.mark.parametrize("variant, second_conv", [("modern", "3"), ("classic", "4")])
def test_feature_figure_of_lenet5(variant, second_conv, batch, capture, tmp_path):
    images, labels = batch
    captured = capture(render=True)
    net = LeNet5(variant, rng=0)
    path = tmp_path / "features.png"
    settings = dict(sys.modules["matplotlib"].rcParams)
    save_feature_figure(net, images, labels, CLASS_NAMES["fashion-mnist"], path, n_images=3)
    assert dict(sys.modules["matplotlib"].rcParams) == settings  # global state untouched

    pixels = read_png(path)
    height, width = pixels.shape[:2]
    assert 400 <= width <= 1400 and 300 <= height <= 1400, pixels.shape
    rgb = pixels[..., :3].reshape(-1, 3)
    colours = np.round(rgb * 255).astype(np.int64) @ [1 << 16, 1 << 8, 1]
    assert len(np.unique(colours)) > 100                  # drawn, not blank
    assert ((rgb[:, 0] > 0.6) & (rgb[:, 2] < 0.4)).any()  # red (positive) and
    assert ((rgb[:, 2] > 0.6) & (rgb[:, 0] < 0.4)).any()  # blue (negative) values

    texts = [t.get_text() for ax in captured[0].axes for t in ax.texts + [ax.title]]
    assert any(f"layer {second_conv} output" in t for t in texts), texts
    # the first image of each class: 0 (Ankle boot), 2 (T-shirt/top), 3 (Pullover)
    logits = net(images[[0, 2, 3]]).astype(np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    labels_drawn = [t for t in texts if t.startswith("true:")]
    assert len(labels_drawn) == 3
    for text, true, p in zip(labels_drawn, ["Ankle boot", "T-shirt/top", "Pullover"],
                             probabilities):
        predicted = CLASS_NAMES["fashion-mnist"][p.argmax()]
        assert text == f"true: {true}\npredicted: {predicted}\nprobability {p.max():.0%}"


def test_any_sequential_with_a_conv_nested_or_alone(batch, capture, tmp_path):
    images, _ = batch
    captured = capture(render=False)
    one_conv = nn.Sequential(nn.Conv2d(1, 3, 3, rng=0), nn.Flatten(), nn.Linear(3 * 26 * 26, 4))
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU()),
                           nn.Conv2d(2, 5, 3, stride=2, rng=0), nn.Flatten(),
                           nn.Linear(5 * 12 * 12, 4, rng=0))
    for net in (one_conv, nested):
        save_feature_figure(net, images, None, None, tmp_path / "f.png", n_images=2)
    titles = [[ax.title.get_text() for ax in fig.axes] for fig in captured]
    assert "layer 0 output\n3 maps 26x26" in titles[0]
    assert "layer 0.0 output\n2 maps 26x26" in titles[1]
    assert "layer 1 output\n5 maps 12x12" in titles[1]


def test_runs_in_eval_mode_and_restores_every_mode(batch, capture, tmp_path):
    images, labels = batch
    captured = capture(render=False)
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(self.training)
            return x

    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), Probe(), nn.Flatten(),
                        nn.Dropout(0.5), nn.Linear(2 * 26 * 26, 10, rng=0))
    net.train()
    net[3].eval()
    save_feature_figure(net, images, labels, None, tmp_path / "f.png", n_images=2)
    assert seen == [False] and len(captured) == 1
    assert [m.training for m in net.modules()] == [True, True, True, True, False, True]


@pytest.mark.parametrize("change, error, match", [
    ({"model": LeNet5(rng=0).state_dict()}, TypeError, "model"),
    ({"model": nn.Sequential(nn.Flatten(), nn.Linear(784, 10))}, ValueError, "Conv2d"),
    ({"images": np.zeros((2, 28, 28), np.float32)}, ValueError, "images"),
    ({"images": np.zeros((0, 1, 28, 28), np.float32)}, ValueError, "images"),
    ({"labels": np.zeros(5, int)}, ValueError, "labels"),
    ({"labels": np.zeros(6)}, ValueError, "labels"),
    ({"labels": np.full(6, 10)}, ValueError, "labels"),
    ({"labels": np.full(6, -1)}, ValueError, "labels"),
    ({"class_names": ["a", "b"]}, ValueError, "class_names"),
    ({"class_names": "0123456789"}, ValueError, "class_names"),
    ({"n_images": 0}, ValueError, "n_images"),
    ({"n_images": 1.5}, TypeError, "n_images"),
])
def test_feature_figure_argument_errors(change, error, match, batch, capture, tmp_path):
    captured = capture(render=False)
    arguments = dict(model=LeNet5(rng=0), images=batch[0], labels=batch[1], class_names=None,
                     path=tmp_path / "f.png", n_images=2)
    arguments.update(change)
    with pytest.raises(error, match=match):
        save_feature_figure(**arguments)
    assert not captured


def test_without_matplotlib_the_error_is_the_install_hint(batch, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    path = tmp_path / "f.png"
    with pytest.raises(ImportError) as info:
        save_feature_figure(LeNet5(rng=0), batch[0], batch[1], None, path)
    assert str(info.value) == PLOT_HINT == 'pip install "fastconv[plot]"'
    assert not path.exists()
