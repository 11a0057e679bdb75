"""LatentSync's face alignment and paste-back (heygemd.pipeline.align) against a restatement of the reference.

The restatement below follows bytedance/LatentSync 1.6 line by line in float64 torch, on whole frames:
``AlignRestore.transformation_from_points``, kornia's ``warp_affine`` (a normalised homography,
``affine_grid`` and ``grid_sample`` with ``align_corners=True``, the fill added through a warped mask of
ones), ``ImageProcessor.affine_transform`` (truncation to uint8, LANCZOS4 to 512), ``restore_video``'s
torchvision bicubic antialiased resize and ``AlignRestore.restore_img`` (kornia's 2 x 2 erosion and Gaussian
blur). Only the three points come from LatentSync 1.5's 68-landmark rule. The real face is the astronaut
portrait with landmarks from heygemd's own dlib detector.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heygemd.demo import portrait
from heygemd.pipeline.align import (
    CROP_SIZE,
    align_face,
    alignment_matrices,
    alignment_points,
    paste_mask,
    restore_face,
    similarity_matrix,
)
from heygemd.pipeline.faces import DlibDetector

# ------------------------------------------------------------------------------------ the restatement

RATIO = 512 / 256 * 2.8
REFERENCE_TEMPLATE = np.array([[19 - 2, 30 - 10], [56 + 2, 30 - 10], [37.5, 45 - 5]]) * RATIO
FACE_W, FACE_H = int(75 * RATIO), int(100 * RATIO)


def reference_points(landmarks: np.ndarray) -> np.ndarray:
    """LatentSync 1.5: eyebrow centres (17-21, 22-26) and nose centre (27-35) of the 68 landmarks."""
    return np.stack([landmarks[17:22].mean(0), landmarks[22:27].mean(0), landmarks[27:36].mean(0)])


def reference_matrix(points1: np.ndarray, p_bias: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor]:
    """``AlignRestore.transformation_from_points(points1, template, smooth=True, p_bias)`` in float64."""
    p1 = torch.tensor(points1, dtype=torch.float64)
    p2 = torch.tensor(REFERENCE_TEMPLATE, dtype=torch.float64)
    c1, c2 = p1.mean(0), p2.mean(0)
    s1, s2 = torch.std(p1 - c1), torch.std(p2 - c2)
    n1, n2 = (p1 - c1) / s1, (p2 - c2) / s2
    u, _, v = torch.svd(n1.T @ n2)
    r = v @ u.T
    if torch.det(r) < 0:
        v[:, -1] = -v[:, -1]
        r = v @ u.T
    t = c2.reshape(2, 1) - (s2 / s1) * (r @ c1.reshape(2, 1))
    m = torch.cat(((s2 / s1) * r, t), dim=1)
    bias = n2[2] - n1[2]
    if p_bias is not None:
        bias = p_bias * 0.2 + bias * 0.8
    m[:, 2] = m[:, 2] + bias
    return m.numpy(), bias


def reference_matrices(landmarks: np.ndarray) -> np.ndarray:
    """One reference run (a fresh ``p_bias``) per run of frames with finite landmarks."""
    out = np.full((len(landmarks), 2, 3), np.nan)
    p_bias = None
    for i, row in enumerate(landmarks):
        if not np.isfinite(row).all():
            p_bias = None
            continue
        out[i], p_bias = reference_matrix(reference_points(row), p_bias)
    return out


def _pixel_to_normal(height: int, width: int) -> torch.Tensor:
    return torch.tensor([[2 / (width - 1), 0, -1], [0, 2 / (height - 1), -1], [0, 0, 1]], dtype=torch.float64)


def kornia_warp_affine(
    src: torch.Tensor, matrix: np.ndarray, dsize: tuple[int, int], fill: float | None = None
) -> torch.Tensor:
    """``kornia.geometry.transform.warp_affine(src, M, dsize, mode="bilinear", align_corners=True)``, with
    ``padding_mode="fill"`` when ``fill`` is given and ``"zeros"`` otherwise. ``src`` is (1, C, H, W)."""
    height, width = src.shape[-2:]
    m3 = torch.cat([torch.tensor(matrix, dtype=torch.float64), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    dst_from_src = _pixel_to_normal(*dsize) @ m3 @ torch.linalg.inv(_pixel_to_normal(height, width))
    src_from_dst = torch.linalg.inv(dst_from_src)
    grid = F.affine_grid(src_from_dst[None, :2], [1, src.shape[1], *dsize], align_corners=True)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if fill is not None:
        covered = F.grid_sample(torch.ones_like(src), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out + (1 - covered) * fill
    return out


def reference_align(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``align_warp_face`` (fill 127, ``.astype(np.uint8)``) then ``cv2.resize(..., 512, INTER_LANCZOS4)``."""
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].to(torch.float64)
    warped = kornia_warp_affine(image, matrix, (FACE_H, FACE_W), fill=127.0)
    crop = warped[0].permute(1, 2, 0).numpy().astype(np.uint8)
    return cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LANCZOS4)


def kornia_erosion_2x2(image: torch.Tensor) -> torch.Tensor:
    """``kornia.morphology.erosion(image, ones(2, 2))``: origin (1, 1), geodesic border (outside ignored)."""
    padded = F.pad(image, (1, 0, 1, 0), value=float("inf"))
    h, w = image.shape[-2:]
    shifts = [padded[..., i : i + h, j : j + w] for i in range(2) for j in range(2)]
    return torch.stack(shifts).amin(dim=0)


def kornia_gaussian_blur(image: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """``kornia.filters.gaussian_blur2d(image, (size, size), (sigma, sigma))``: reflect border, separable."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    half = size // 2
    padded = F.pad(image, (half, half, half, half), mode="reflect") if half else image
    out = F.conv2d(padded, kernel.view(1, 1, 1, size))
    return F.conv2d(out, kernel.view(1, 1, size, 1))


def reference_mask(matrix: np.ndarray, frame_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """The eroded rectangle, the soft mask and ``w_edge`` of ``restore_img`` over the whole frame."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    ones = torch.ones((1, 1, FACE_H, FACE_W), dtype=torch.float64)
    rectangle = kornia_erosion_2x2(kornia_warp_affine(ones, inverse, frame_hw))
    w_edge = int(float(rectangle.sum()) ** 0.5) // 20
    centre = cv2.erode(rectangle.squeeze().numpy().astype(np.float32), np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    size = 2 * w_edge + 1
    soft = kornia_gaussian_blur(torch.from_numpy(centre).double()[None, None], size, 0.3 * ((size - 1) * 0.5 - 1) + 0.8)
    return rectangle.squeeze().numpy(), soft.squeeze().numpy(), w_edge


def reference_restore(frame: np.ndarray, generated: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``restore_video`` for one frame: the decoder's [-1, 1] face resized (bicubic, antialias) to 420 x 560,
    then ``restore_img``: inverse warp with fill 127, clamp, feathered blend, ``.to(torch.uint8)``."""
    h, w = frame.shape[:2]
    face = torch.from_numpy(generated).permute(2, 0, 1)[None].to(torch.float64) / 127.5 - 1
    face = F.interpolate(face, size=(FACE_H, FACE_W), mode="bicubic", antialias=True, align_corners=False)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    inv_face = kornia_warp_affine(face, inverse, (h, w), fill=127.0)[0]
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    rectangle, soft, _ = reference_mask(matrix, (h, w))
    image = torch.from_numpy(frame).permute(2, 0, 1).to(torch.float64)
    rect_t, soft_t = torch.from_numpy(rectangle)[None], torch.from_numpy(soft)[None]
    out = soft_t * (rect_t * inv_face) + (1 - soft_t) * image
    return out.permute(1, 2, 0).to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """The portrait (512x512 BGR) and its 68 landmarks from heygemd's dlib detector."""
    image = portrait()
    detector = DlibDetector()
    boxes = detector.detect(image)
    assert len(boxes) == 1
    return image, detector.landmarks(image, boxes[0]).astype(np.float64)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]]]
    )


def moved(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.fixture(scope="module")
def hd_frame(astronaut) -> tuple[np.ndarray, np.ndarray]:
    """A 1920x1080 close-up: the portrait enlarged 3.5x and turned 7 degrees, and its moved landmarks."""
    image, landmarks = astronaut
    place = similarity(7.0, 3.5, (200.0, -30.0))
    frame = cv2.warpAffine(image, place, (1920, 1080), flags=cv2.INTER_LINEAR, borderValue=(40, 60, 80))
    return frame, moved(landmarks, place)


def synthetic_track(n: int, seed: int, mirrored: bool = False) -> np.ndarray:
    """(n, 68, 2) landmarks of a made-up face that turns, zooms and moves, with a little jitter per point.

    ``mirrored``: the eyebrows swap sides (a mirror image), which the reference's rotation must flip back.
    """
    rng = np.random.default_rng(seed)
    face = rng.normal(0.0, 6.0, (68, 2))
    face[17:22] += (-45.0, -35.0)
    face[22:27] += (45.0, -35.0)
    face[27:36] += (0.0, 5.0)
    face[48:68] += (0.0, 45.0)
    if mirrored:
        face[:, 0] *= -1
    t = np.arange(n)
    angles = 12.0 * np.sin(t / 5.0)
    scales = 1.5 + 0.3 * np.cos(t / 7.0)
    track = np.stack(
        [
            moved(face, similarity(a, s, (640 + 30 * np.sin(k / 3), 360 + 10 * k)))
            for k, (a, s) in enumerate(zip(angles, scales, strict=True))
        ]
    )
    return track + rng.normal(0.0, 0.4, track.shape)


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mirrored", [False, True])
def test_matrices_equal_the_reference_over_a_track_with_a_gap(mirrored):
    track = synthetic_track(30, seed=3, mirrored=mirrored)
    track[12:15] = np.nan  # no face: the smoothing term restarts after the gap
    ours = alignment_matrices(track)
    expected = reference_matrices(track)
    assert ours.shape == (30, 2, 3) and ours.dtype == np.float64
    assert np.isnan(ours[12:15]).all() and np.isfinite(ours[:12]).all() and np.isfinite(ours[15:]).all()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    # the smoothing term matters: without the previous frame's bias the matrices differ
    alone = np.stack([similarity_matrix(alignment_points(row))[0] for row in track[16:]])
    assert np.abs(alone[:, :, 2] - ours[16:, :, 2]).max() > 1e-3
    # a restart after the gap: frame 15 is computed as if it were the first
    np.testing.assert_allclose(ours[15], similarity_matrix(alignment_points(track[15]))[0], atol=1e-12)


def test_the_three_points_land_on_the_template():
    track = synthetic_track(8, seed=5)
    points = np.stack([alignment_points(row) for row in track])
    matrices = alignment_matrices(track)
    landed = np.stack([moved(p, m) for p, m in zip(points, matrices, strict=True)])
    # A similarity fit of noisy points plus the reference's nose term: within a few template pixels
    # (the template is 420x560; the eyebrows are 230 px apart).
    assert np.abs(landed - REFERENCE_TEMPLATE).max() < 6.0
    # An exact similarity copy of the template without rotation lands exactly (the nose term is 0 then).
    exact = moved(REFERENCE_TEMPLATE, similarity(0.0, 0.37, (812.5, 301.25)))
    matrix, bias = similarity_matrix(exact)
    np.testing.assert_allclose(moved(exact, matrix), REFERENCE_TEMPLATE, atol=1e-9)
    np.testing.assert_allclose(bias, 0.0, atol=1e-12)


def test_marked_points_appear_at_the_template_positions_in_the_crop():
    """Three bright dots drawn at the alignment points show up where the template puts them in the 512 crop
    (cv2.resize maps pixel centres: x' = (x + 0.5) * 512 / 420 - 0.5)."""
    frame = np.full((1080, 1920, 3), 30, dtype=np.uint8)
    points = moved(REFERENCE_TEMPLATE, similarity(-9.0, 0.8, (900.0, 350.0)))
    for x, y in points:
        cv2.circle(frame, (round(x * 16), round(y * 16)), 6 * 16, (250, 250, 250), -1, cv2.LINE_AA, shift=4)
    crop = align_face(frame, similarity_matrix(points)[0])
    grey = crop[..., 1].astype(np.float64) - 30
    expected = (REFERENCE_TEMPLATE + 0.5) * (CROP_SIZE / FACE_W, CROP_SIZE / FACE_H) - 0.5
    for x, y in expected:
        ys, xs = np.mgrid[int(y) - 20 : int(y) + 21, int(x) - 20 : int(x) + 21]
        weight = np.clip(grey[ys, xs], 0, None)
        centre = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
        assert np.abs(centre - (x, y)).max() < 0.5


def test_crop_equals_the_reference_on_the_astronaut(astronaut):
    image, landmarks = astronaut
    matrix = alignment_matrices(landmarks[None])[0]
    np.testing.assert_allclose(matrix, reference_matrix(reference_points(landmarks), None)[0], atol=1e-9)
    ours = align_face(image, matrix)
    expected = reference_align(image, matrix)
    assert ours.shape == (512, 512, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    # What the model needs: the mouth inside the hole of LatentSync's mask.png (rows 95-242, columns 9-247 of
    # 256, i.e. 190-484 and 18-494 of the 512 crop), the eyes above it.
    in_crop = moved(landmarks, matrix) * (CROP_SIZE / FACE_W, CROP_SIZE / FACE_H)
    mouth, eyes = in_crop[48:68], in_crop[36:48]
    assert (mouth[:, 1] > 190).all() and (mouth[:, 1] < 484).all()
    assert (mouth[:, 0] > 18).all() and (mouth[:, 0] < 494).all()
    assert (eyes[:, 1] < 190).all()


def test_crop_equals_the_reference_at_1080p_with_the_face_near_the_edge(hd_frame):
    frame, landmarks = hd_frame
    # move the frame so the face crosses the left edge: part of the crop is outside the frame (fill 127)
    frame = np.ascontiguousarray(frame[:, 820:])
    landmarks = landmarks - (820.0, 0.0)
    matrix = alignment_matrices(landmarks[None])[0]
    ours = align_face(frame, matrix)
    expected = reference_align(frame, matrix)
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert (ours[:, :40] == 127).all()  # the crop's left side lies outside the frame, its right half inside
    assert (ours[:, 256:] != 127).any(axis=2).mean() > 0.99


def test_paste_mask_equals_the_reference_feather(hd_frame):
    frame, landmarks = hd_frame
    matrix = alignment_matrices(landmarks[None])[0]
    mask = paste_mask(matrix, frame.shape)
    rectangle, soft, w_edge = reference_mask(matrix, frame.shape[:2])
    x0, y0, x1, y1 = mask.box
    assert mask.edge == w_edge and w_edge == int(float(rectangle.sum()) ** 0.5) // 20
    assert mask.soft.dtype == np.float32 and 0.0 <= mask.soft.min() and mask.soft.max() <= 1.0
    # outside the box the reference's weights are 0: the box holds the whole mask
    assert rectangle.sum() == pytest.approx(float(rectangle[y0:y1, x0:x1].sum()))
    assert soft.sum() == pytest.approx(float(soft[y0:y1, x0:x1].sum()))
    np.testing.assert_allclose(mask.rectangle, rectangle[y0:y1, x0:x1], atol=0.02)
    np.testing.assert_allclose(mask.soft, soft[y0:y1, x0:x1], atol=0.02)
    # The feather: 1 deep inside, 0 outside, and the ramp between is about 2 * w_edge + 1 pixels wide
    # (a Gaussian of size 2*w_edge+1 over a rectangle eroded by w_edge): walk from the centre to the top edge.
    centre = np.array([FACE_W / 2, FACE_H / 2])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    start = moved(centre[None], inverse)[0]
    top = moved(np.array([[FACE_W / 2, -1.0]]), inverse)[0]
    steps = np.linspace(0, 1, 2000)[:, None]
    path = start + steps * (top - start)
    values = mask.soft[np.round(path[:, 1]).astype(int) - y0, np.round(path[:, 0]).astype(int) - x0]
    assert values[0] == pytest.approx(1.0) and values[-1] == 0.0
    assert (np.diff(values) <= 1e-6).all()  # never rises on the way out
    ramp = np.linalg.norm(path[(values > 0.01) & (values < 0.99)] - path[0], axis=1)
    assert 1.2 * w_edge < ramp.max() - ramp.min() < 2.5 * w_edge + 2


@pytest.mark.parametrize("left", [0, 820], ids=["inside", "across-the-edge"])
def test_restore_equals_the_reference(hd_frame, left):
    frame, landmarks = hd_frame
    frame, landmarks = np.ascontiguousarray(frame[:, left:]), landmarks - (left, 0.0)
    matrix = alignment_matrices(landmarks[None])[0]
    generated = align_face(frame, matrix)
    generated[300:420, 120:400] = (20, 40, 200)  # a changed mouth region
    generated[50:60] = 255
    ours = frame.copy()
    restore_face(ours, generated, matrix)
    expected = reference_restore(frame, generated, matrix)
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.01
    changed = np.abs(ours.astype(int) - frame.astype(int)).max(axis=2) > 20
    assert changed.sum() > 10_000  # the mouth region really went in
    if left:  # the rectangle crosses the frame's left edge: pasted up to it, with no feather there
        mask = paste_mask(matrix, frame.shape)
        assert mask.box[0] == 0 and (mask.soft[:, 0] > 0.999).sum() > 100


def test_align_then_restore_of_an_unchanged_crop_gives_the_frame_back(astronaut):
    image, landmarks = astronaut
    # a 720p frame with the face around 45 % of the height, turned a little
    place = similarity(-4.0, 2.4, (60.0, 40.0))
    frame = cv2.warpAffine(image, place, (1280, 720), flags=cv2.INTER_LINEAR, borderValue=(90, 100, 110))
    matrix = alignment_matrices(moved(landmarks, place)[None])[0]
    out = frame.copy()
    restore_face(out, align_face(frame, matrix), matrix)
    mask = paste_mask(matrix, frame.shape)
    x0, y0, x1, y1 = mask.box
    inside = np.zeros(frame.shape[:2], dtype=bool)
    inside[y0:y1, x0:x1] = mask.soft > 0
    diff = np.abs(out.astype(int) - frame.astype(int))
    assert (diff[~inside] == 0).all()  # bit for bit outside the feathered mask
    assert inside.sum() > 50_000
    # Inside, the crop went through four resamplings (bilinear, LANCZOS4, bicubic, bilinear) and two
    # truncations to uint8, which darken it by about a level on average; the reference does the same.
    signed = out.astype(int)[inside] - frame.astype(int)[inside]
    assert -1.0 < signed.mean() < -0.6
    assert np.abs(signed).mean() < 1.1 and np.percentile(np.abs(signed), 99) <= 3
    reference = reference_restore(frame, reference_align(frame, matrix), matrix)
    reference_signed = reference.astype(int)[inside] - frame.astype(int)[inside]
    assert abs(np.abs(signed).mean() - np.abs(reference_signed).mean()) < 0.1


def test_a_face_outside_the_frame_changes_nothing_and_crops_to_fill():
    frame = np.full((360, 640, 3), 77, dtype=np.uint8)
    away = similarity(0.0, 1.0, (900.0, 0.0))  # the template sits 900 px left of the frame
    crop = align_face(frame, away)
    assert (crop == 127).all()
    restore_face(frame, np.zeros((512, 512, 3), np.uint8), away)
    assert (frame == 77).all()


def test_a_float_face_is_restored_as_the_reference_restores_the_decoder_output(hd_frame):
    frame, landmarks = hd_frame
    matrix = alignment_matrices(landmarks[None])[0]
    crop = align_face(frame, matrix)
    from_uint8, from_float = frame.copy(), frame.copy()
    restore_face(from_uint8, crop, matrix)
    restore_face(from_float, crop.astype(np.float32), matrix)
    assert np.array_equal(from_uint8, from_float)
    # unrounded and past 255 (the reference clamps only after warping back)
    generated = crop.astype(np.float32) * 1.01 + 0.6
    ours = frame.copy()
    restore_face(ours, generated, matrix)
    diff = np.abs(ours.astype(int) - reference_restore(frame, generated, matrix).astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.01
    assert (ours.astype(int) - from_uint8.astype(int)).sum() > 0


def test_bad_arguments_are_refused():
    frame = np.zeros((100, 100, 3), np.uint8)
    good = similarity(0.0, 2.0, (0.0, 0.0))
    with pytest.raises(ValueError, match="68 landmarks"):
        alignment_points(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="coincide"):
        similarity_matrix(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"\(N, 68, 2\)"):
        alignment_matrices(np.zeros((68, 2)))
    with pytest.raises(ValueError, match="frame must be uint8"):
        align_face(frame.astype(np.float32), good)
    with pytest.raises(ValueError, match="finite"):
        align_face(frame, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="singular"):
        align_face(frame, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="generated face"):
        restore_face(frame, np.zeros((256, 256, 3), np.uint8), good)
    frame.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        restore_face(frame, np.zeros((512, 512, 3), np.uint8), good)
