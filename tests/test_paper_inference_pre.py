"""Pins of the inference pre-processing and of the resize back, in both modes (issue 17's open mutants
of preprocess.py).

* ``stretch`` (default): the paper resizes test images to 512 x 512 ("resized to 512x512", section IV-A)
  and the authors' test code does it with ``cv2.resize(image, (input_w, input_h))``: INTER_LINEAR with
  the half-pixel convention and the border replicated, i.e. ``F.interpolate(bilinear,
  align_corners=False)``. Images are read with OpenCV (BGR) but the option defaults to RGB order.
* ``letterbox`` (option): the image centred in a black square of side max(H, W); an input pixel is
  black unless its centre lies in [0, W) x [0, H) of the original, the half-open pixel convention.
* back to the original: ``nearest`` (the paper path) takes, for each original pixel centre, the input
  pixel containing it; ``bilinear`` (the code path, ``cv2.resize`` of the S x S canvas) samples it at
  ``(x + 0.5) * S / W - 0.5`` clamped to the canvas. Resampling only a window of the canvas must give
  the same pixels as resampling the whole canvas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from objguided.models.preprocess import Frame, prepare


def _interpolate(img: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.as_tensor(np.asarray(img, np.float64))[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_stretch_is_cv2_resize_bilinear_half_pixel_and_rgb_by_default():
    """Up (30 x 40 -> 64) and down (90 x 70 -> 64): every channel is cv2's INTER_LINEAR of that channel,
    /255 - 0.5; channel 0 stays red unless bgr=True."""
    rng = np.random.default_rng(3)
    for h, w in ((30, 40), (90, 70)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x, frame = prepare(img, 64)
        assert (frame.scale_x, frame.scale_y, frame.pad_x, frame.pad_y) == (64 / w, 64 / h, 0.0, 0.0)
        for ch in range(3):
            want = _interpolate(img[..., ch] / 255.0, 64, 64) - 0.5
            np.testing.assert_allclose(x[ch].numpy(), want, atol=1e-5)
        xb, _ = prepare(img, 64, bgr=True)
        np.testing.assert_array_equal(xb.numpy(), x.numpy()[::-1])


def test_rgba_drops_alpha_and_hxwx1_is_gray():
    """An RGBA image is its RGB part (alpha ignored); HxWx1 is gray repeated to three channels, as HxW."""
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (12, 10, 1), dtype=np.uint8)], axis=2)
    for mode in ("stretch", "letterbox"):
        assert torch.equal(prepare(rgba, 16, mode)[0], prepare(rgb, 16, mode)[0])
        gray = rgb[..., 0]
        x1, _ = prepare(gray[..., None], 16, mode)
        assert torch.equal(x1, prepare(gray, 16, mode)[0])
        assert torch.equal(x1[0], x1[1]) and torch.equal(x1[1], x1[2])


@pytest.mark.parametrize("shape", [(6, 6, 2), (6, 6, 5), (2, 6, 6, 3)])
def test_other_channel_counts_are_refused_with_the_shape(shape):
    with pytest.raises(ValueError, match=r"expected HxW, HxWx3 or HxWx4"):
        prepare(np.zeros(shape, np.uint8), 8)


def test_letterbox_pads_both_axes_and_keeps_half_open_pixel_edges():
    """5 x 8 and 8 x 5 white images in an 8 x 8 letterbox (scale 1, pad 1.5): input rows (cols) 1..5
    have their centre at original 0.5 .. 4.5, row 1's top edge is original 0 (inside), row 6's is 5 = H
    (outside): exactly rows 1..5 are white."""
    white = np.full((5, 8), 255, np.uint8)
    for img, axis in ((white, 0), (white.T.copy(), 1)):
        x, frame = prepare(img, 8, "letterbox")
        pads = (frame.pad_y, frame.pad_x) if axis == 0 else (frame.pad_x, frame.pad_y)
        assert pads == (1.5, 0.0) and frame.scale_x == frame.scale_y == 1.0
        want = np.full((8, 8), -0.5)
        if axis == 0:
            want[1:6, :] = 0.5
        else:
            want[:, 1:6] = 0.5
        np.testing.assert_allclose(x[0].numpy(), want, atol=1e-6)


def test_letterbox_frame_maps_both_axes():
    """u = (x + pad_x) * s, v = (y + pad_y) * s and back, with the pad on x for a tall image."""
    f = Frame.letterbox(40, 25, 64)  # side 40, s 1.6, pad_x 7.5
    assert (f.scale_x, f.scale_y, f.pad_x, f.pad_y) == (1.6, 1.6, 7.5, 0.0)
    u, v = f.to_input(0.0, 10.0)
    assert (float(u), float(v)) == pytest.approx((12.0, 16.0))
    x, y = f.to_orig(12.0, 16.0)
    assert (float(x), float(y)) == pytest.approx((0.0, 10.0))
    g = Frame.letterbox(25, 40, 64)
    assert (g.pad_x, g.pad_y) == (0.0, 7.5)
    assert [float(c) for c in g.to_input(10.0, 0.0)] == pytest.approx([16.0, 12.0])


@pytest.mark.parametrize("hw", [(5, 8), (8, 5), (6, 8)])
def test_labels_to_input_is_the_nearest_warp_keeping_the_dtype(hw):
    """Each input pixel takes the original pixel under its centre, 0 in the bands; the label dtype stays."""
    h, w = hw
    labels = (np.arange(h * w, dtype=np.int32).reshape(h, w) + 1)
    f = Frame.letterbox(h, w, 8)
    out = f.labels_to_input(labels)
    assert out.dtype == np.int32 and out.shape == (8, 8)
    want = np.zeros((8, 8), np.int32)
    # scale 1: input pixel v holds original floor(v + 0.5 - pad), the first is v = ceil(pad - 0.5)
    py, px = (math.ceil((8 - n) / 2 - 0.5) for n in (h, w))
    want[py:py + h, px:px + w] = labels
    np.testing.assert_array_equal(out, want)


# frames whose input is sampled finer than the original (up), coarser (down), and with pads
_FRAMES = {
    "stretch_up": Frame.stretch(30, 40, 64),
    "stretch_down": Frame.stretch(200, 150, 32),
    "letterbox_tall_down": Frame.letterbox(150, 90, 32),
    "letterbox_wide_up": Frame.letterbox(20, 36, 64),
}


def _nearest_reference(frame: Frame, canvas: np.ndarray) -> np.ndarray:
    """Original pixel centre -> input pixel containing it, written from the frame's scale and pads."""
    ys = np.floor((np.arange(frame.orig_h) + 0.5 + frame.pad_y) * frame.scale_y).astype(int)
    xs = np.floor((np.arange(frame.orig_w) + 0.5 + frame.pad_x) * frame.scale_x).astype(int)
    return canvas[np.ix_(ys, xs)]


def _windows(size: int):
    """Top-left, bottom-right, a middle one and single pixels at both corners: (r0, c0, h, w)."""
    return [(0, 0, 9, 7), (size - 6, size - 8, 6, 8), (size // 3, size // 4, 5, 11), (0, 0, 1, 1),
            (size - 1, size - 1, 1, 1)]


@pytest.mark.parametrize("name", list(_FRAMES))
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_a_window_resamples_to_the_pixels_of_the_whole_canvas(name, mode):
    """window_to_orig of a window (its canvas zero elsewhere) placed in the original frame equals the
    resize of the whole canvas: nearest as the centre rule above; bilinear as cv2.resize of the canvas
    (F.interpolate) for the stretch frames. Windows touch every border, one is a single pixel."""
    frame = _FRAMES[name]
    rng = np.random.default_rng(7)
    for r0, c0, hh, ww in _windows(frame.size):
        win = rng.uniform(0.2, 1.0, (hh, ww))
        canvas = np.zeros((frame.size, frame.size))
        canvas[r0:r0 + hh, c0:c0 + ww] = win
        got, y0, x0 = frame.window_to_orig(win, r0, c0, mode)
        full = np.zeros((frame.orig_h, frame.orig_w))
        full[y0:y0 + got.shape[0], x0:x0 + got.shape[1]] = got
        whole = frame.input_to_orig(canvas, mode)
        np.testing.assert_allclose(full, whole, atol=1e-12, err_msg=f"{(r0, c0, hh, ww)}")
        if mode == "nearest":
            np.testing.assert_array_equal(whole, _nearest_reference(frame, canvas))
            np.testing.assert_array_equal(frame.input_to_orig(canvas), whole)  # nearest is the default
            np.testing.assert_array_equal(frame.window_to_orig(win, r0, c0)[0], got)
        elif name.startswith("stretch"):
            np.testing.assert_allclose(whole, _interpolate(canvas, frame.orig_h, frame.orig_w), atol=1e-12)


def test_a_window_in_the_letterbox_band_maps_to_no_pixel():
    """A window wholly in the black band of a tall letterbox covers no original pixel: an empty result,
    and the whole-canvas resize has nothing there."""
    f = Frame.letterbox(40, 10, 40)  # pad_x 15: input columns 0..14 are band
    for mode in ("nearest", "bilinear"):
        got, _, _ = f.window_to_orig(np.ones((6, 4)), 10, 2, mode)
        assert got.size == 0
        canvas = np.zeros((40, 40))
        canvas[10:16, 2:6] = 1.0
        assert not f.input_to_orig(canvas, mode).any()
