"""LatentSync's aligned 512x512 face crop and its paste-back, from heygemd's own 68-point landmarks.

LatentSync (bytedance/LatentSync, Apache-2.0) regenerates the lower half of a face that has been rotated,
scaled and moved onto a fixed template. This module makes that crop from a frame and puts a generated crop
back into the frame, one frame at a time (numpy and OpenCV; no torch, no whole-video arrays):

1. **Three points** per frame from the tracked 68 landmarks (iBUG layout, ``faces.FaceTrack.landmarks``,
   already filtered in time): the centre of each eyebrow (points 17-21 and 22-26) and of the nose (27-35).
   This is LatentSync 1.5's rule (``latentsync/utils/image_processor.py`` at the 1.5 release, 75a4a17).
2. **A similarity transform** onto the template ``TEMPLATE_POINTS`` in a ``TEMPLATE_SIZE`` (420 x 560)
   crop, estimated as the reference's ``AlignRestore.transformation_from_points`` does (1.6,
   ``latentsync/utils/affine_transform.py``): both point sets centred and divided by the (n-1) standard
   deviation of all their coordinates, the rotation from the SVD of their 2x2 covariance (a reflection
   flipped back), the scale as the ratio of the two deviations, and then the reference's "smoothing" term:
   the nose's offset between the two normalised point sets, blended ``BIAS_MEMORY`` previous + rest
   current, added to the translation (in pixels, as the reference does). ``alignment_matrices`` does this
   for a whole track: (N, 2, 3) float64 matrices mapping frame pixels to template pixels, the per-presenter
   preparation that can be cached with the track.
3. **The crop** (``align_face``): a bilinear warp into 420 x 560 with ``ALIGN_FILL`` outside the frame
   (kornia ``warp_affine(..., mode="bilinear", padding_mode="fill", fill_value=127)``, whose pixel
   convention is OpenCV's), truncated to uint8, then ``cv2.resize`` to 512 x 512 with ``INTER_LANCZOS4``:
   the same two steps in the same order as ``ImageProcessor.affine_transform``.
4. **The paste-back** (``restore_face``), as ``AlignRestore.restore_img`` with the resize of
   ``LipsyncPipeline.restore_video``: the 512 x 512 result resized to 420 x 560 with torchvision's bicubic
   antialiased filter (Pillow's bicubic on float images, the filter torchvision's antialias mode reproduces),
   warped back with the inverse transform (bilinear, the reference's fill of 127 on its [-1, 1] scale, i.e.
   ``RESTORE_FILL`` on the 0-255 scale, then clamped to 0..255); an all-ones 420 x 560 mask warped the same
   way (zeros outside) and eroded with a 2 x 2 square; ``edge = int(sqrt(area of that mask)) // 20``; the
   mask eroded again with a ``2*edge`` square, blurred with a Gaussian of size ``2*edge + 1`` and sigma
   ``0.3 * (edge - 1) + 0.8`` (reflecting border); ``soft * eroded * face + (1 - soft) * frame``, truncated
   to uint8. ``paste_mask`` gives these weights. A crop pasted back unchanged comes out about one level
   darker on average (the two truncations), in the reference as here.

What differs from the reference, and why:

- **No InsightFace.** The 1.6 reference takes its three points from InsightFace's 106-point model (whose
  ``buffalo_l`` weights are licensed for non-commercial research only) and rounds them to whole pixels.
  Here they come from heygemd's 68 landmarks by the 1.5 rule, unrounded: the landmarks are already filtered
  sub-pixel positions, and rounding would add up to half a pixel of jitter. 1.5 also passed its landmarks
  through a "Laplacian" smoother; heygemd's track filter (``faces`` step 5) takes its place.
- **The tracked face**, not "the largest face of each frame": the face ``faces.track_faces`` follows. Frames
  without a face are not this module's business; the caller passes them through (``alignment_matrices``
  gives NaN there and restarts the smoothing term after every gap, as the reference does at the start of
  a video).
- **Arithmetic.** The reference warps in float16 on the GPU, where a frame coordinate near 1920 is only known to
  about half a pixel; here the warps run in float32 (OpenCV 5 samples at the exact positions, OpenCV 4 at 1/32
  pixel), the transform in float64. Where exact arithmetic gives a whole number (a flat area, an unchanged pixel)
  float rounding must not truncate it one level down, so ``TRUNCATION_GUARD`` is added before each truncation. The
  generated face arrives as uint8 (``restore_face`` also takes float32 on the 0-255 scale, unclamped, which is the
  reference's own input); the reference keeps the decoder's floats until the end.
- **Only the face's surroundings are computed.** Every step runs on the part of the frame the template
  rectangle covers plus a margin wider than the feather, which gives the same pixels as working on the whole
  frame (the mask is zero beyond it) at a fraction of the cost. Outside the feathered mask the frame is left
  bit for bit unchanged.

Cost per frame on one core (process CPU time, ``cv2.setNumThreads(1)``, the best of repeated runs on a shared
2-core x86 machine, so upper bounds; the face about 40 % of the frame height): 720p ~10 ms per ``align_face``
(~6 of them the LANCZOS4 resize) and ~23 ms per ``restore_face``; 1080p ~11 ms and ~36 ms. Of ``restore_face``,
~9 ms is the antialiased resize and 2.5 ms (720p) to 8 ms (1080p) the feathered mask; the rest is the blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

ALIGN_VERSION = 1
"""Bumped when the crop's arithmetic changes: part of the fingerprint of anything cached from the crops
(a presenter's VAE latents), so those are recomputed."""

TEMPLATE_RATIO = 512 / 256 * 2.8
"""The reference's ``ratio = resolution / 256 * 2.8`` at resolution 512 (``AlignRestore.__init__``)."""
TEMPLATE_POINTS = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]]) * TEMPLATE_RATIO
"""Where the left eyebrow, right eyebrow and nose centres land in the template crop (x, y pixels): the
reference's ``[[19 - 2, 30 - 10], [56 + 2, 30 - 10], [37.5, 45 - 5]] * ratio``."""
TEMPLATE_SIZE = (int(75 * TEMPLATE_RATIO), int(100 * TEMPLATE_RATIO))
"""(width, height) of the template crop: the reference's ``face_size``, 420 x 560."""
CROP_SIZE = 512
"""Side of the square crop the model sees (LatentSync 1.6's resolution)."""

LEFT_BROW = np.arange(17, 22)
RIGHT_BROW = np.arange(22, 27)
NOSE = np.arange(27, 36)
"""iBUG-68 indices averaged into the three alignment points (LatentSync 1.5's rule)."""

BIAS_MEMORY = 0.2
"""Share of the previous frame's nose offset in the current one (``p_bias * 0.2 + bias * 0.8``)."""
ALIGN_FILL = 127.0
"""Value of crop pixels that fall outside the frame (the reference's ``fill_value``)."""
RESTORE_FILL = (ALIGN_FILL / 2 + 0.5) * 255
"""The same fill of 127 as the reference applies it when warping back: on its [-1, 1] scale, where 127 is
16320 on the 0-255 scale (and then clamped to 255)."""
EDGE_DIVISOR = 20
"""``w_edge = int(sqrt(mask area)) // 20``: the feather is about 5 % of the pasted rectangle's size."""
TRUNCATION_GUARD = 1e-3
"""Added before truncating to uint8, so float rounding (254.99998) does not turn an exact 255 into 254."""


def alignment_points(landmarks: np.ndarray) -> np.ndarray:
    """(3, 2) float64 centres of the left eyebrow, right eyebrow and nose from 68 landmarks (x, y)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks of shape (68, 2), got {points.shape}")
    return np.stack([points[LEFT_BROW].mean(axis=0), points[RIGHT_BROW].mean(axis=0), points[NOSE].mean(axis=0)])


def similarity_matrix(points: np.ndarray, previous_bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The reference's transform from three frame points onto ``TEMPLATE_POINTS``, and its smoothing state.

    Returns ``(matrix, bias)``: the (2, 3) float64 matrix mapping frame pixels to template pixels, and the
    (2,) nose offset to pass as ``previous_bias`` for the next frame of the same run (None: the first frame).
    """
    source = np.asarray(points, dtype=np.float64)
    if source.shape != (3, 2) or not np.isfinite(source).all():
        raise ValueError(f"expected 3 finite points of shape (3, 2), got {source!r}")
    target = TEMPLATE_POINTS
    source_centre, target_centre = source.mean(axis=0), target.mean(axis=0)
    source_spread = float(np.std(source - source_centre, ddof=1))
    target_spread = float(np.std(target - target_centre, ddof=1))
    if source_spread < 1e-6:
        raise ValueError(f"the alignment points coincide: {source.tolist()}")
    source_norm = (source - source_centre) / source_spread
    target_norm = (target - target_centre) / target_spread
    u, _, vt = np.linalg.svd(source_norm.T @ target_norm)
    rotation = vt.T @ u.T
    if np.linalg.det(rotation) < 0:
        vt[-1] *= -1
        rotation = vt.T @ u.T
    linear = target_spread / source_spread * rotation
    bias = target_norm[2] - source_norm[2]
    if previous_bias is not None:
        bias = BIAS_MEMORY * np.asarray(previous_bias, dtype=np.float64) + (1 - BIAS_MEMORY) * bias
    translation = target_centre - linear @ source_centre + bias
    return np.hstack([linear, translation[:, None]]), bias


def alignment_matrices(landmarks: np.ndarray) -> np.ndarray:
    """(N, 2, 3) float64 frame-to-template matrices for a track's (N, 68, 2) landmarks, in frame order.

    Frames whose landmarks are not finite (no face) get NaN; the smoothing term restarts after each of them.
    """
    marks = np.asarray(landmarks, dtype=np.float64)
    if marks.ndim != 3 or marks.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks of shape (N, 68, 2), got {marks.shape}")
    matrices = np.full((len(marks), 2, 3), np.nan)
    bias: np.ndarray | None = None
    for i, row in enumerate(marks):
        if not np.isfinite(row).all():
            bias = None
            continue
        matrices[i], bias = similarity_matrix(alignment_points(row), bias)
    return matrices


def align_face(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The (512, 512, 3) uint8 aligned crop of ``frame`` (uint8 HxWx3, any channel order: the crop keeps it)."""
    _check_frame(frame)
    forward = _check_matrix(matrix)
    width, height = TEMPLATE_SIZE
    x0, y0, x1, y1 = _covered_box(forward, frame.shape, margin=2)
    warped: np.ndarray
    if x1 <= x0 or y1 <= y0:
        warped = np.full((height, width, 3), ALIGN_FILL, dtype=np.float32)
    else:
        warped = cv2.warpAffine(
            frame[y0:y1, x0:x1].astype(np.float32),
            _from_box(forward, x0, y0),
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(ALIGN_FILL,) * 3,
        )
    return cv2.resize(_truncate(warped), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LANCZOS4)


@dataclass(frozen=True, eq=False)
class PasteMask:
    """Where and how strongly ``restore_face`` pastes, within ``box`` of the frame."""

    box: tuple[int, int, int, int]
    """``(x1, y1, x2, y2)`` of the frame region the weights cover (half-open); everything outside stays."""
    rectangle: np.ndarray
    """(h, w) float32: the template rectangle warped into the frame, eroded 2 x 2 (multiplies the face)."""
    soft: np.ndarray
    """(h, w) float32 in [0, 1]: the feathered blend weight of the face."""
    edge: int
    """``int(sqrt(rectangle.sum())) // EDGE_DIVISOR``: the feather's half-width in pixels."""


def paste_mask(matrix: np.ndarray, frame_shape: tuple[int, ...]) -> PasteMask:
    """The feathered weights with which a crop aligned by ``matrix`` is pasted into a frame of ``frame_shape``."""
    forward = _check_matrix(matrix)
    width, height = TEMPLATE_SIZE
    frame_area = (width + 1) * (height + 1) / abs(float(np.linalg.det(forward[:, :2])))
    widest_edge = int(np.sqrt(frame_area)) // EDGE_DIVISOR + 1
    x0, y0, x1, y1 = _covered_box(forward, frame_shape, margin=widest_edge + 2)
    if x1 <= x0 or y1 <= y0:
        empty = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.float32)
        return PasteMask((x0, y0, x1, y1), empty, empty, 0)
    rectangle = cv2.warpAffine(
        np.ones((height, width), dtype=np.float32),
        _from_box(forward, x0, y0),
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    rectangle = cv2.erode(rectangle, np.ones((2, 2), np.uint8))  # outside the image counts as "keep"
    edge = int(float(rectangle.sum(dtype=np.float64)) ** 0.5) // EDGE_DIVISOR
    # With edge 0 the reference's empty kernel makes cv2.erode use its default 3 x 3 square; so does this.
    centre = cv2.erode(rectangle, np.ones((2 * edge, 2 * edge), np.uint8))
    size = 2 * edge + 1
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    soft = cv2.GaussianBlur(centre, (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return PasteMask((x0, y0, x1, y1), rectangle, soft, edge)


def restore_face(frame: np.ndarray, generated: np.ndarray, matrix: np.ndarray) -> None:
    """Paste the (512, 512, 3) ``generated`` crop back into ``frame`` in place, through ``paste_mask``.

    ``generated`` is uint8, or float32 on the 0-255 scale (unclamped), in the frame's channel order;
    ``matrix`` is the one ``align_face`` cut the crop with. Pixels where the mask is 0 stay bit for bit.
    """
    _check_frame(frame)
    forward = _check_matrix(matrix)
    if generated.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"generated face must be ({CROP_SIZE}, {CROP_SIZE}, 3), got {generated.shape}")
    if not frame.flags.writeable:
        raise ValueError("frame is read-only; restore_face pastes in place")
    mask = paste_mask(forward, frame.shape)
    x0, y0, x1, y1 = mask.box
    if not mask.soft.any():
        return
    width, height = TEMPLATE_SIZE
    face: np.ndarray = cv2.warpAffine(
        _resize_antialiased(generated, (width, height)),
        _from_box(forward, x0, y0),
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(RESTORE_FILL,) * 3,
    )
    np.clip(face, 0.0, 255.0, out=face)
    region = frame[y0:y1, x0:x1]
    original = region.astype(np.float32)
    # soft * (rectangle * face) + (1 - soft) * original, in place: original + soft * (rectangle * face - original)
    face *= mask.rectangle[..., None]
    face -= original
    face *= mask.soft[..., None]
    face += original
    region[...] = _truncate(face)


# --------------------------------------------------------------------------------------------- helpers


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 (height, width, 3), got {frame.dtype} {frame.shape}")


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    forward = np.asarray(matrix, dtype=np.float64)
    if forward.shape != (2, 3) or not np.isfinite(forward).all():
        raise ValueError(f"matrix must be a finite (2, 3) affine transform, got {matrix!r}")
    if abs(float(np.linalg.det(forward[:, :2]))) < 1e-12:
        raise ValueError(f"matrix is singular: {forward.tolist()}")
    return forward


def _covered_box(forward: np.ndarray, frame_shape: tuple[int, ...], margin: int) -> tuple[int, int, int, int]:
    """Half-open integer box of the frame pixels that touch the template rectangle under bilinear sampling
    (its preimage, a parallelogram, grown by one template pixel), plus ``margin``, clipped to the frame."""
    width, height = TEMPLATE_SIZE
    corners = np.array([[-1, -1], [width, -1], [-1, height], [width, height]], dtype=np.float64)
    inverse = cv2.invertAffineTransform(forward)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    low = np.floor(points.min(axis=0)) - margin
    high = np.ceil(points.max(axis=0)) + 1 + margin
    frame_h, frame_w = int(frame_shape[0]), int(frame_shape[1])
    x0, y0 = int(np.clip(low[0], 0, frame_w)), int(np.clip(low[1], 0, frame_h))
    x1, y1 = int(np.clip(high[0], x0, frame_w)), int(np.clip(high[1], y0, frame_h))
    return x0, y0, x1, y1


def _from_box(forward: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """``forward`` for pixel coordinates relative to the box corner ``(x0, y0)`` instead of the frame's."""
    shifted = forward.copy()
    shifted[:, 2] += forward[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return shifted


def _truncate(values: np.ndarray) -> np.ndarray:
    """uint8 by truncation, as the reference casts (see ``TRUNCATION_GUARD``); values are within 0..255."""
    return np.clip(values + TRUNCATION_GUARD, 0.0, 255.0).astype(np.uint8)


def _resize_antialiased(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``image`` resized to ``size`` (width, height) with the bicubic antialiased filter of torchvision's
    ``resize(..., BICUBIC, antialias=True)``: Pillow's bicubic on float images, channel by channel."""
    out = np.empty((size[1], size[0], image.shape[2]), dtype=np.float32)
    for c in range(image.shape[2]):
        channel = Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))
        out[..., c] = np.asarray(channel.resize(size, Image.Resampling.BICUBIC))
    return out
