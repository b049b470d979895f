"""The planner (fastconv/_plan.py): which kernel each pass of a shape gets, and why.

``EXPECTED`` maps a handful of shapes to the kernel of each pass under ``"auto"``, so
that a change of the rules shows in a diff of this table. Shapes sit away from the
table's thresholds: the SIMD width of the kernels in use (which pads channels) does
not move them.
"""

import dataclasses

import numpy as np
import pytest

import fastconv
from fastconv import _blocking, _plan
from fastconv._geometry import conv_geometry

# name: (x shape, w shape, conv arguments, {pass: kernel under "auto"})
EXPECTED = {
    "lenet-C1": ((64, 1, 28, 28), (6, 1, 5, 5), dict(padding=2),
                 {"forward": "wide_rows", "input_grad": "wide_rows",
                  "weight_grad": "wide_rows"}),
    "resnext-g32-b1": ((1, 256, 28, 28), (256, 8, 3, 3), dict(padding=1, groups=32),
                       {"forward": "wide_rows", "input_grad": "channel_vector_scatter",
                        "weight_grad": "channel_vector"}),
    "dilated-6-out": ((8, 3, 64, 64), (6, 3, 3, 3), dict(padding=2, dilation=2),
                      {"forward": "wide_rows", "input_grad": "wide_rows",
                       "weight_grad": "channel_vector"}),
    "lenet-C3": ((64, 6, 14, 14), (16, 6, 5, 5), {},
                 {"forward": "channel_vector", "input_grad": "channel_vector_scatter",
                  "weight_grad": "channel_vector"}),
    "3x3-64-56": ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1),
                  {"forward": "winograd", "input_grad": "winograd",
                   "weight_grad": "channel_vector"}),
    "3x3-256-14": ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1),
                   {"forward": "winograd", "input_grad": "winograd", "weight_grad": "gemm"}),
    # one image of a deep 3x3 gives Winograd 4 tiles: too few, im2col in one band
    "3x3-512-7-batch1": ((1, 512, 7, 7), (512, 512, 3, 3), dict(padding=1),
                         {"forward": "gemm", "input_grad": "gemm", "weight_grad": "gemm"}),
    "1x1-256-14": ((8, 256, 14, 14), (256, 256, 1, 1), {},
                   {"forward": "gemm", "input_grad": "gemm", "weight_grad": "gemm"}),
    "3x3s2-128-28": ((8, 128, 28, 28), (256, 128, 3, 3), dict(stride=2, padding=1),
                     {"forward": "gemm", "input_grad": "gemm", "weight_grad": "gemm"}),
    "7x7s2-3-224": ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3),
                    {"forward": "channel_vector", "input_grad": "gemm",
                     "weight_grad": "channel_vector"}),
    # a 1x1 head to 3 classes: nothing to pack, the GEMM beats the direct kernels
    "1x1-64-to-3": ((8, 64, 56, 56), (3, 64, 1, 1), {},
                    {"forward": "gemm", "input_grad": "gemm", "weight_grad": "gemm"}),
    "depthwise-3x3": ((8, 32, 56, 56), (32, 1, 3, 3), dict(padding=1, groups=32),
                      {"forward": "wide_rows", "input_grad": "wide_rows",
                       "weight_grad": "wide_rows"}),
    "depthwise-3x3-s2": ((8, 32, 56, 56), (32, 1, 3, 3), dict(stride=2, padding=1, groups=32),
                         {"forward": "wide_rows", "input_grad": "row_loops",
                          "weight_grad": "wide_rows"}),
    "depthwise-3x3-s2-small": ((1, 144, 28, 28), (144, 1, 3, 3),
                               dict(stride=2, padding=1, groups=144),
                               {"forward": "wide_rows", "input_grad": "row_loops",
                                "weight_grad": "wide_rows"}),
    "depthwise-3x3-dilated": ((1, 16, 12, 12), (16, 1, 3, 3),
                              dict(padding=2, dilation=2, groups=16),
                              {"forward": "wide_rows", "input_grad": "wide_rows",
                               "weight_grad": "row_loops"}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_auto_plans_of_known_shapes(name):
    x_shape, w_shape, conv, kernels = EXPECTED[name]
    plans = fastconv.explain(x_shape, w_shape, **conv)
    assert {p: plans[p].kernel for p in _plan.PASSES} == kernels


@pytest.mark.parametrize("algorithm, kernels", [
    ("im2col", {"forward": "gemm", "input_grad": "gemm", "weight_grad": "gemm"}),
    ("winograd", {"forward": "winograd", "input_grad": "winograd", "weight_grad": "gemm"}),
    ("direct", {"forward": "channel_vector", "input_grad": "channel_vector_scatter",
                "weight_grad": "channel_vector"}),
])
def test_explicit_algorithms_go_through_the_planner(algorithm, kernels):
    geom = conv_geometry((4, 16, 12, 12), (24, 16, 3, 3), 1, 1, 1, 1)
    plans = {p: _plan.plan(geom, p, np.float32, 2, algorithm) for p in _plan.PASSES}
    assert {p: plan.kernel for p, plan in plans.items()} == kernels
    assert all(f"algorithm={algorithm!r}" in plan.reason for plan in plans.values())


def test_winograd_input_gradient_beyond_the_kernels_reach_runs_gemm():
    geom = conv_geometry((2, 8, 9, 9), (8, 8, 3, 3), 1, 3, 1, 1)  # padding 3 > 2
    plan = _plan.plan(geom, "input_grad", np.float32, 1, "winograd")
    assert plan.kernel == "gemm" and "reach" in plan.reason


def test_auto_winograd_falls_back_on_nonfinite_data():
    geom = conv_geometry((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)
    forward = _plan.plan(geom, "forward", np.float32, 2)
    assert (forward.nonfinite_operand, forward.fallback.kernel) == ("x", "gemm")
    input_grad = _plan.plan(geom, "input_grad", np.float32, 2)
    assert (input_grad.nonfinite_operand, input_grad.fallback.kernel) == ("gy", "gemm")
    # asked for by name, Winograd runs whatever the data hold
    assert _plan.plan(geom, "forward", np.float32, 2, "winograd").fallback is None


def test_wide_input_gradient_falls_back_on_nonfinite_weights():
    geom = conv_geometry((64, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1)
    plan = _plan.plan(geom, "input_grad", np.float32, 2)
    assert plan.kernel == "wide_rows"
    assert (plan.nonfinite_operand, plan.fallback.kernel) == ("w", "row_loops")


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, rows", [
    ((8, 128, 28, 28), (256, 128, 3, 3), 2, 1, 14),       # 8 images: whole-image bands
    ((4, 128, 17, 17), (128, 128, 1, 7), 1, (0, 3), 9),   # 4 images: two bands each
    ((8, 128, 17, 17), (128, 128, 7, 1), 1, (3, 0), 17),  # taps on shifted rows: the same
    ((8, 1024, 14, 14), (256, 1024, 1, 1), 1, 0, 28),     # 1x1: MIN_UNITS, rows of 4 pixels
])
def test_forward_bands_stop_at_forward_min_units(x_shape, w_shape, stride, padding, rows):
    """The im2col forward cuts bands only until the images and groups give
    FORWARD_MIN_UNITS units (8); a 1x1 forward keeps MIN_UNITS (16)."""
    geom = conv_geometry(x_shape, w_shape, stride, padding, 1, 1)
    forward = _plan.plan(geom, "forward", np.float32, 2, "im2col")
    assert forward.kernel == "gemm" and forward.rows == rows
    assert _blocking.FORWARD_MIN_UNITS == 8 < _blocking.MIN_UNITS
    bands = -(-(geom.oh * geom.ow // (forward.row_pixels or geom.ow)) // forward.rows)
    assert geom.n * bands >= (_blocking.MIN_UNITS if geom.pointwise
                              else _blocking.FORWARD_MIN_UNITS)


def test_blocking_and_workspace():
    geom = conv_geometry((8, 128, 28, 28), (256, 128, 3, 3), 2, 1, 1, 1)
    forward = _plan.plan(geom, "forward", np.float64, 3)
    assert forward.rows == _blocking.band_rows(geom, 8, _blocking.FORWARD_MIN_UNITS) == 14
    assert forward.n_threads == 3
    # the forward packs 28 of the 128 channels at a time (252 rows of columns, within one
    # depth block of the GEMM), the last block 16
    assert forward.workspace == 28 * 9 * forward.rows * geom.ow
    assert forward.rows * geom.ckk * geom.ow <= _blocking.BAND_ELEMENTS
    wgrad = _plan.plan(geom, "weight_grad", np.float32, 1)
    assert (wgrad.channel_block, wgrad.rows, wgrad.chunks) == (
        _blocking.gemm_weight_grad_blocking(geom))
    pointwise = _plan.plan(conv_geometry((8, 256, 14, 14), (256, 256, 1, 1), 1, 0, 1, 1),
                           "forward", np.float32, 2)
    assert pointwise.pointwise and pointwise.workspace == 1


def test_plans_are_cached_per_geometry():
    geom = conv_geometry((3, 5, 9, 9), (7, 5, 3, 3), 1, 1, 1, 1)
    same = conv_geometry((3, 5, 9, 9), (7, 5, 3, 3), (1, 1), ((1, 1), (1, 1)), 1, 1)
    assert geom == same and hash(geom) == hash(same)
    assert _plan.plan(geom, "forward", np.float32, 2) is _plan.plan(same, "forward",
                                                                     np.float32, 2)


def test_transposed_convolution_shares_packed_columns():
    plans = fastconv.explain((8, 128, 16, 16), (128, 64, 4, 4), stride=2, padding=1,
                             transpose=True)
    assert plans["forward"].pass_ == "input_grad"  # conv2d's input gradient kernel
    assert plans["input_grad"].packed_columns and plans["weight_grad"].packed_columns
    big = fastconv.explain((64, 128, 64, 64), (128, 64, 4, 4), stride=2, padding=1,
                           transpose=True)
    assert not big["input_grad"].packed_columns  # beyond PACKED_ELEMENTS


def test_explain_prints_every_pass():
    text = str(fastconv.explain((64, 6, 14, 14), (16, 6, 5, 5)))
    lines = text.splitlines()
    assert lines[0].startswith("conv2d: x (64, 6, 14, 14) w (16, 6, 5, 5) -> y (64, 16, 10, 10)")
    assert [line.split()[0] for line in lines[1:]] == ["forward", "input_grad", "weight_grad"]
    assert all("workspace" in line and " -- " in line for line in lines[1:])


def test_explain_takes_arrays_and_their_dtype():
    x = np.zeros((2, 3, 8, 8))  # float64: the plans are float64's
    plans = fastconv.explain(x, np.zeros((12, 3, 3, 3), np.float32), padding=1)
    assert plans.geometry.y_shape == (2, 12, 8, 8)
    assert plans["forward"].kernel == "channel_vector"
    as_shapes = fastconv.explain((2, 3, 8, 8), (12, 3, 3, 3), padding=1, dtype=np.float64)
    assert plans["forward"] == as_shapes["forward"]


@pytest.mark.parametrize("kwargs, error", [
    (dict(algorithm="fast"), ValueError),
    (dict(algorithm="winograd", stride=2), ValueError),
    (dict(algorithm="winograd", transpose=True), ValueError),
    (dict(dtype=np.int32), TypeError),
    (dict(groups=2), ValueError),
])
def test_explain_refuses_what_conv2d_refuses(kwargs, error):
    with pytest.raises(error):
        fastconv.explain((2, 3, 8, 8), (4, 3, 3, 3), **kwargs)


def test_thread_count_sizes_only_the_workspace_rows():
    geom = conv_geometry((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)
    for pass_ in _plan.PASSES:
        one, many = (_plan.plan(geom, pass_, np.float32, n) for n in (1, 16))
        assert dataclasses.replace(one, n_threads=16, fallback=None) == dataclasses.replace(
            many, fallback=None)


def test_autotuning_plugs_into_the_planner():
    geom = conv_geometry((2, 32, 10, 10), (48, 32, 3, 3), 1, 1, 1, 1)
    timed = []

    def measure(plan):
        timed.append(plan.algorithm)
        if plan.algorithm != "im2col":  # make im2col the fastest
            import time
            time.sleep(0.002)

    previous = fastconv.set_autotune(True)
    try:
        fastconv.clear_autotune_cache()
        chosen = _plan.plan(geom, "forward", np.float32, 1, measure=measure)
        assert sorted(set(timed)) == ["direct", "im2col", "winograd"]
        assert chosen.kernel == "gemm" and chosen.reason.startswith("autotuned")
        timed.clear()
        assert _plan.plan(geom, "forward", np.float32, 1, measure=measure) == chosen
        assert timed == []  # remembered, not timed again
        assert fastconv.explain((2, 32, 10, 10), (48, 32, 3, 3), padding=1,
                                n_threads=1)["forward"].reason.startswith("autotuned")
    finally:
        fastconv.set_autotune(previous)
        fastconv.clear_autotune_cache()


def test_one_image_keeps_its_gemm_bands_wide():
    """Cutting one image's rows into single-row bands (to give every thread work) would
    repack the weights for each narrow GEMM: bands keep at least MIN_BAND_COLUMNS, and
    one image's bands come in near-equal pairs."""
    one = fastconv.explain((1, 128, 28, 28), (64, 128, 1, 1), stride=2)["forward"]
    assert (one.rows, one.channel_block) == (7, 0)  # 14 rows of 14: 2 bands, not 3 of 5
    assert fastconv.explain((1, 128, 17, 17), (128, 128, 1, 7),
                            padding=(0, 3))["forward"].rows == 9  # 9 + 8, not 5 + 5 + 5 + 2
    assert fastconv.explain((1, 64, 56, 56), (128, 64, 3, 3), stride=2,
                            padding=1)["forward"].rows == 7  # four bands of 7 rows
    # eight images of 14x14: one band each (FORWARD_MIN_UNITS)
    assert fastconv.explain((8, 128, 28, 28), (256, 128, 3, 3), stride=2,
                            padding=1)["forward"].rows == 14


@pytest.mark.parametrize("height, most, rows", [(14, 3, 7), (17, 4, 9), (28, 12, 7), (28, 16, 2),
                                                (7, 1, 7), (5, 16, 5), (3, 2, 3)])
def test_paired_bands_share_out_evenly(height, most, rows):
    assert _blocking._paired_band_rows(height, most) == rows
    bands = -(-height // rows)
    assert bands <= max(1, most) and (bands == 1 or -(-bands // 2) * 2 * rows
                                      <= _blocking.BAND_PAIR_SLACK * height)


def test_few_bands_cut_the_forward_gemm_into_output_channel_blocks():
    """One image of one group is one unit: with >= 256 output channels and a whole-image
    band within WHOLE_IMAGE_ELEMENTS, one band in two blocks of output channels (from the
    shape alone); enough units, or thin layers, keep one block."""
    one = fastconv.explain((1, 512, 7, 7), (512, 512, 3, 3), padding=1)
    assert (one["forward"].rows, one["forward"].channel_block) == (7, 256)
    # the input gradient's one (image, group) task: four blocks of gx's channels
    assert (one["input_grad"].rows, one["input_grad"].channel_block) == (7, 128)
    with fastconv.threads(1):  # the same blocking on any thread count
        assert fastconv.explain((1, 512, 7, 7), (512, 512, 3, 3),
                                padding=1)["forward"].channel_block == 256
    wide = fastconv.explain((1, 512, 28, 28), (1024, 512, 1, 1), stride=2)["forward"]
    assert (wide.rows, wide.channel_block) == (14, 512)
    odd = fastconv.explain((1, 1024, 14, 14), (264, 1024, 1, 1))["forward"]
    assert (odd.rows, odd.channel_block) == (14, 144)  # multiples of 16: 144 + 120
    big = fastconv.explain((1, 256, 56, 56), (256, 256, 3, 3), padding=1, algorithm="im2col")
    assert big["forward"].channel_block == 0  # the whole image's columns would not fit
    two = fastconv.explain((2, 512, 7, 7), (512, 512, 3, 3), padding=1)["forward"]
    assert (two.rows, two.channel_block) == (7, 256)  # two units: blocks of 256
    eight = fastconv.explain((8, 512, 7, 7), (512, 512, 3, 3), padding=1, algorithm="im2col")
    assert eight["forward"].channel_block == eight["input_grad"].channel_block == 0


def test_few_output_pointwise_forward_takes_narrow_bands(restore_threads):
    """A float32 1x1 forward with fewer than 32 output channels per group multiplies by
    BLAS over bands of at most POINTWISE_FEW_OUT_BAND elements of x (4096 per row here:
    8 rows, not the image's 16); with 32 channels, or in float64, the bands stay. The
    narrow bands' result equals the reference and is bit-identical on any thread count."""
    x_shape = (16, 64, 16, 64)
    narrow = fastconv.explain(x_shape, (24, 64, 1, 1))["forward"]
    assert narrow.pointwise and narrow.rows == _blocking.POINTWISE_FEW_OUT_BAND // 4096 == 8
    assert fastconv.explain(x_shape, (32, 64, 1, 1))["forward"].rows == 16
    assert fastconv.explain(x_shape, (24, 64, 1, 1), dtype=np.float64)["forward"].rows == 16
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((24, 64, 1, 1)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    ys = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            ys.append(fastconv.conv2d(x, w, b))
    y_ref = np.einsum("nchw,kc->nkhw", x.astype(np.float64), w[:, :, 0, 0].astype(np.float64))
    y_ref += b[None, :, None, None]
    np.testing.assert_allclose(ys[0], y_ref, rtol=1e-4, atol=1e-4 * np.abs(y_ref).max())
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


def test_pointwise_forward_bands_of_whole_column_tiles(restore_threads):
    """A pointwise forward cut into bands of whole output rows whose pixels are no
    multiple of 16 sees its pixels as rows of a power of two instead and cuts as many
    bands at multiples of 16 pixels (12x12: 80 + 64, not 72 + 72); where the last band
    would keep under half a band, or the pixels split into no rows of 4, it keeps its
    rows. The result equals the reference, bit-identical on any thread count."""
    x_shape, w_shape = (4, 24, 12, 12), (40, 24, 1, 1)
    plan = fastconv.explain(x_shape, w_shape)["forward"]
    assert (plan.row_pixels, plan.rows) == (16, 5)
    assert "rows 5 of 16 pixels" in plan.describe()
    # 28x7 in bands of 7 rows (49 pixels): 64-pixel bands would leave 4 for the last
    geom = conv_geometry((1, 8, 28, 7), (8, 8, 1, 1), 1, 0, 1, 1)
    assert _blocking.pointwise_pixel_rows(geom, 7) == (0, 7)
    geom = conv_geometry((1, 8, 14, 14), (8, 8, 1, 1), 1, 0, 1, 1)
    assert _blocking.pointwise_pixel_rows(geom, 7) == (4, 28)  # 112 + 84 pixels
    geom = conv_geometry((1, 8, 7, 7), (8, 8, 1, 1), 1, 0, 1, 1)
    assert _blocking.pointwise_pixel_rows(geom, 3) == (0, 3)  # 49 pixels: no rows of 4
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        ys = []
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                ys.append(fastconv.conv2d(x, w, b))
        y_ref = np.einsum("nchw,kc->nkhw", x.astype(np.float64),
                          w[:, :, 0, 0].astype(np.float64)) + b[None, :, None, None]
        tol = 1e-4 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(ys[0], y_ref, rtol=tol, atol=tol * np.abs(y_ref).max())
        for y in ys[1:]:
            np.testing.assert_array_equal(y, ys[0])


def test_weight_gradient_blocks_come_in_powers_of_two_of_whole_vectors():
    """Input-channel blocks of the im2col weight gradient: a power of two of them, each a
    multiple of WG_CHANNEL_MULTIPLE channels, from WG_MIN_TASKS tasks on; fewer split
    the batch into chunks."""
    def blocking(x_shape, w_shape, stride=1, padding=0):
        return _blocking.gemm_weight_grad_blocking(
            conv_geometry(x_shape, w_shape, stride, padding, 1, 1))
    # 1x1 s2 over 512 channels: 4 blocks of 128 over the whole image, no chunks
    assert blocking((1, 512, 28, 28), (1024, 512, 1, 1), 2) == (128, 14, 1)
    # 3x3 over 128 channels: 1152 columns -> 8 blocks of 16 (not 9 of 15)
    assert blocking((8, 128, 28, 28), (256, 128, 3, 3), 2, 1) == (16, 14, 1)
    # 100 channels, 900 columns: 4 blocks rounded up to 32 channels, the last one of 4
    assert blocking((2, 100, 9, 9), (8, 100, 3, 3), 1, 1)[0] == 32
    # pointwise: narrow blocks need 2 * WG_MIN_TASKS of them, else chunks of the batch
    assert blocking((8, 256, 14, 14), (256, 256, 1, 1)) == (32, 14, 1)
    cblock, _, chunks = blocking((8, 144, 56, 56), (24, 144, 1, 1))
    assert cblock == 144 and chunks > 1


def test_wide_weight_gradient_chunks_the_batch_only_until_the_groups_give_the_tasks():
    """The wide-row weight gradient runs (chunk of images, group) tasks: chunks of the
    batch (one image each at most, MAX_CHUNKS at most) only until there are
    WIDE_WG_MIN_TASKS tasks; a depthwise layer's groups alone give them."""
    def chunks(x_shape, w_shape, groups, stride=1, padding=1):
        geom = conv_geometry(x_shape, w_shape, stride, padding, 1, groups)
        plan = _plan.plan(geom, "weight_grad", np.float32, 2, "direct")
        assert plan.kernel == "wide_rows"
        assert plan.chunks == _blocking.wide_weight_grad_chunks(geom)
        return plan.chunks
    assert _blocking.WIDE_WG_MIN_TASKS == 16
    assert chunks((8, 960, 7, 7), (960, 1, 3, 3), 960) == 1      # MobileNet-v2's depthwise
    assert chunks((8, 6, 7, 7), (6, 1, 3, 3), 6) == 3            # 6 groups: 3 chunks
    assert chunks((2, 6, 7, 7), (6, 1, 3, 3), 6) == 2            # ... one image each at most
    assert chunks((64, 1, 28, 28), (6, 1, 5, 5), 1, padding=2) == 16  # LeNet's C1
    assert chunks((64, 1, 28, 28), (6, 1, 5, 5), 1, padding=2) == _blocking.MAX_CHUNKS


def test_small_passes_take_fewer_threads():
    """One thread per WORK_PER_THREAD multiply-adds, at most the threads available, at
    least one; the rest of the plan is the same on any count."""
    small = conv_geometry((1, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)  # LeNet C3, 240 K
    assert _plan.plan(small, "forward", np.float32, 2).n_threads == 1
    with fastconv.threads(2):
        assert fastconv.explain((1, 6, 14, 14), (16, 6, 5, 5))["forward"].n_threads == 1
    medium = conv_geometry((2, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)  # 480 K: 3 shares
    assert [_plan.plan(medium, "weight_grad", np.float32, n).n_threads
            for n in (1, 2, 16)] == [1, 2, 3]
    large = conv_geometry((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)
    assert _plan.plan(large, "input_grad", np.float32, 16).n_threads == 16
    one, two = (_plan.plan(medium, "forward", np.float32, n) for n in (1, 2))
    assert dataclasses.replace(one, n_threads=2, workspace=two.workspace) == two
