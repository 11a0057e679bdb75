"""The weights-free engine: audio-driven mouth animation from face landmarks, numpy and OpenCV only.

For each frame the Wav2Lip mel window is read as two numbers: how far the mouth opens (gated speech
loudness times a vowel-height cue) and its shape (round "o/u" narrow, spread "i/e" wide). The mouth is
*set* to that, not added to what the frame shows: the crop's own mouth state (inner-lip gap, chin drop,
lip width; ``pipeline.mouth``) is compared with the presenter's rest state (``FaceBatch.mouth_rest``), and
what is open beyond rest is closed first: the lips meet and the band of the source opening between them
(teeth, tongue, cavity) is cut out of the picture rather than squashed. Closing and the audio's opening
together move the lip, mouth-corner and jaw landmarks; a smooth backward displacement field
(normalised Gaussian weights of the moved points, split along the lip seam so the lips part) warps the
crop with ``cv2.remap``, and the gap between the parted inner lips is painted as a mouth: a shadowed
cavity, a band of upper teeth and a darker tongue. The field is multiplied by ``render.mouth_mask``, so
nothing changes from the nose tip upwards or on the crop's border, and in silence over a mouth at rest the
output is the input, bit for bit. A mouth at rest (or no rest given) moves exactly as in version 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from heygemd.pipeline.audio import mel_band_hz, mel_db
from heygemd.pipeline.engine_contract import EngineNeeds, FaceBatch
from heygemd.pipeline.mouth import MouthState, face_frame, measure
from heygemd.pipeline.render import face_width, mouth_mask

VERSION = "2"

UPPER_LIP = np.array([49, 50, 51, 52, 53, 61, 62, 63])
"""Upper lip, outer and inner, without the corners."""
LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
"""Lower lip, outer and inner, without the corners."""
CORNERS = np.array([48, 54, 60, 64])
MOUTH = np.arange(48, 68)
OUTER_LIP = np.arange(48, 60)
INNER_LIP = np.arange(60, 68)
INNER_UPPER = np.array([60, 61, 62, 63, 64])
INNER_LOWER = np.array([60, 67, 66, 65, 64])
JAW = np.arange(2, 15)
JAW_DROP = np.array([0.0, 0.1, 0.25, 0.45, 0.65, 0.8, 0.85, 0.8, 0.65, 0.45, 0.25, 0.1, 0.0])
"""Share of the lower lip's drop that jaw points 2..14 follow (the chin, point 8, most)."""
JAW_RISE = JAW_DROP / JAW_DROP.max()
"""Share of the chin's measured drop that jaw points 2..14 rise by when a dropped jaw is closed."""
NECK = np.arange(4, 13)
"""Jaw points whose copies below the chin hold the neck still while the chin drops over it."""
UPPER_FIELD = np.setdiff1d(np.arange(68), np.concatenate([LOWER_LIP, np.arange(17, 27)]))
"""Points that steer the field above the lip seam: all but the lower lip (and the brows, far away)."""
LOWER_FIELD = np.setdiff1d(np.arange(68), np.concatenate([UPPER_LIP, np.arange(17, 27)]))
"""Points that steer the field below the lip seam: all but the upper lip (and the brows)."""


BAND_HZ = mel_band_hz()
"""Read-only (80,) centre frequency (Hz) of each Wav2Lip mel band (Slaney scale, as the mel basis; librosa's
``mel_frequencies`` as stored in ``pipeline/wav2lip_mel.npz``, so a render imports no librosa)."""


BATCH_FRAMES = 4
"""Crops per ``generate`` call, and so frames per render batch (``run.batch_frames``), as Wav2Lip's on the CPU: the
engine works face by face, so larger batches are no faster and only hold more frames between the stages. With
12 frames (the 32 MiB cap at 720p) the render's queues held ~300 MiB once they had filled, which took longer than a
10 s output (a 60 s one peaked at 1.31x the 10 s one); with 4, ~100 MiB, filled within the first 5 s."""


@dataclass(frozen=True)
class MouthWarpParams:
    """Every tunable of the engine; the defaults are what docs/engines.md describes."""

    centre_column: float = 5.0
    """Mel column (0..15) the frame listens to. In the pipeline's windows column 0 is the frame's own time
    (12.5 ms per column), so 5 makes the mouth lead the sound by ~60 ms, as real articulation does.
    Accepted offset: the picture may lead the sound by at most 80 ms and never trail it. Source: ITU-R
    BT.1359-1 (1998) puts the detectability threshold of sound delayed behind vision at about 125 ms and of
    sound ahead of vision at about 45 ms (acceptability: 185 ms / 90 ms); film practice (cited in ITU-R
    Report BS.1204) allows picture ahead of sound by two frames (83 ms), behind it by one (42 ms). Measured
    on a voiced burst (tests/engines/test_mouthwarp.py): the mouth opens 66-78 ms before the sound starts
    and closes 48-63 ms before it stops, at 24 to 50 fps."""
    column_sigma: float = 3.5
    """Width (columns) of the Gaussian weighting around ``centre_column``; neighbouring frames (3.2 columns
    apart at 25 fps) share most of their weight, so the mouth does not chatter."""
    gate_db: float = -55.0
    """Speech-band level (dB of the Wav2Lip mel scale, 0 dB = mel +4) at or below which the mouth stays closed."""
    full_db: float = -24.0
    """Speech-band level at which the mouth is fully open (loud vowels of speech at about -20 dBFS RMS)."""
    open_ratio: float = 0.30
    """Inner-lip gap at full opening, as a fraction of the mouth reference width."""
    kernel_ratio: float = 0.16
    """Width of the Gaussian weights that spread landmark motion, as a fraction of the mouth reference width."""
    seam_ratio: float = 0.65
    """Where the lips part inside a mouth that is already open in the input: this fraction of the way from
    the upper to the lower inner lip. Upper teeth, which fill most of an open smile, stay with the upper lip."""
    reference_peak_db: float = -22.0
    """Speech-band level of the loud peaks (98th percentile of columns) of a normally levelled recording.
    ``prepare`` lowers the gate and full-open levels by as much as a recording's peaks fall short of this
    (up to ``max_boost_db``), so quiet recordings still open the mouth; loud ones are never turned down."""
    max_boost_db: float = 24.0
    """Most a quiet recording's levels are lifted by ``prepare``."""
    grid_ratio: float = 0.06
    """Spacing of the samples of the (smooth) displacement field, as a fraction of the mouth reference width
    (at least 2 pixels); bilinear in between. Keeps the cost per crop nearly independent of face size."""
    rest_tolerance: float = 0.03
    """How far (share of the eye distance) a crop's mouth may be from the presenter's rest state and still
    count as at rest: landmark noise on a closed mouth is not "open" and is left alone. From twice this
    distance on, the whole difference is taken away; in between, a share rising linearly from 0 to all."""


@dataclass(frozen=True)
class Articulation:
    """What one frame's audio asks of the mouth."""

    loudness: float
    """Gated speech loudness in [0, 1]: 0 in silence, breath and low noise."""
    opening: float
    """Vertical opening in [0, 1]: loudness times the vowel-height cue (open "a" more than "i"/"u")."""
    shape: float
    """Lip shape in [-1, 1]: negative round/tall ("o", "u", "a"), positive spread ("i", "e")."""


@dataclass(frozen=True)
class Excess:
    """How far one crop's mouth is from the presenter's rest state, in crop pixels (0 = at rest)."""

    gap: float = 0.0
    """Inner lips open beyond rest (>= 0): closed by the warp before the audio opens them again."""
    jaw: float = 0.0
    """Chin dropped beyond rest (at most as far as opening the lips by ``gap`` drops it): raised with the lower lip."""
    width: float = 0.0
    """Mouth wider (> 0) or narrower (< 0) than at rest, by at most ``gap``: the corners are brought back.
    (A closed mouth that is wider or narrower than at rest, a smile or a pout, is the presenter's own.)"""

    @property
    def at_rest(self) -> bool:
        return self.gap == 0.0 and self.jaw == 0.0 and self.width == 0.0


def excess(landmarks: np.ndarray, rest: MouthState | None, params: MouthWarpParams = MouthWarpParams()) -> Excess:
    """How far the mouth of ``landmarks`` (68, 2) is from ``rest`` (``pipeline.mouth.rest_state``).

    Differences within ``params.rest_tolerance`` count as none; None (no rest known) or landmarks that are
    not finite give ``Excess()``: the crop's mouth is taken as it is, as before this engine knew of rest.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    if rest is None or not np.isfinite(points).all():
        return Excess()
    state, scale, tol = measure(points), face_frame(points).scale, params.rest_tolerance

    def beyond(value: float) -> float:
        """``value`` in pixels, 0 within the tolerance, all of it from twice the tolerance, a ramp between."""
        return float(value * np.clip(abs(value) / tol - 1.0, 0.0, 1.0) * scale)

    gap = max(beyond(state.gap - rest.gap), 0.0)
    jaw = float(np.clip(beyond(state.jaw - rest.jaw), 0.0, JAW_DROP.max() * 0.8 * gap))
    width = float(np.clip(beyond(state.width - rest.width), -gap, gap))
    return Excess(gap=gap, jaw=jaw, width=width)


@dataclass(frozen=True)
class MouthMotion:
    """Where the landmarks of one crop move (crop pixel coordinates, float64)."""

    source: np.ndarray
    """(68, 2) landmarks as given."""
    target: np.ndarray
    """(68, 2) landmarks after the motion (equal to ``source`` for a closed mouth)."""
    across: np.ndarray
    """(2,) unit vector from mouth corner 48 to corner 54."""
    down: np.ndarray
    """(2,) unit vector perpendicular to ``across``, pointing to the chin."""
    mouth_width: float
    """Corner-to-corner distance in pixels."""
    reference: float
    """Mouth reference width (pixels) that all motion is scaled by: mean of mouth width and 0.45 face width."""
    seam_top: np.ndarray
    """(5, 2) corner 60 to 64: the lowest source pixels that stay with the upper lip."""
    seam_bottom: np.ndarray
    """(5, 2) corner 60 to 64: the highest source pixels that stay with the lower lip. Equal to ``seam_top``
    (between the inner lips, ``seam_ratio``) for a mouth at rest; for a mouth open beyond rest the band in
    between (the part of its opening beyond rest: teeth, tongue, cavity) is cut out as the lips meet."""
    opening_top: np.ndarray
    """(5, 2) upper edge of the new opening (the seam moved with the upper lip), corner 60 to 64."""
    opening_bottom: np.ndarray
    """(5, 2) lower edge of the new opening (the seam moved with the lower lip), corner 60 to 64."""

    def added_opening(self) -> float:
        """Mean height (pixels) of the new opening at the three middle seam points."""
        return float(np.mean((self.opening_bottom[1:4] - self.opening_top[1:4]) @ self.down))


@dataclass(frozen=True)
class WarpResult:
    """One crop's output and the motion that made it."""

    image: np.ndarray
    motion: MouthMotion


def _to_power(mels: np.ndarray) -> np.ndarray:
    """Power per band from Wav2Lip mel values: 10**(dB/10)."""
    return 10.0 ** (mel_db(mels) / 10.0)


def _band_level(power: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """dB of the summed power of the bands centred in [lo, hi) Hz (band axis -2)."""
    band = (BAND_HZ >= lo) & (BAND_HZ < hi)
    return 10.0 * np.log10(power[..., band, :].sum(axis=-2) + 1e-12)


def speech_peak_db(mel: np.ndarray) -> float:
    """Speech-band (100-4000 Hz) level of a recording's loud peaks: the 98th percentile over its columns."""
    return float(np.percentile(_band_level(_to_power(np.asarray(mel, dtype=np.float64)), 100.0, 4000.0), 98))


def levelled(params: MouthWarpParams, mel: np.ndarray) -> MouthWarpParams:
    """``params`` with gate and full-open levels lowered to suit a quiet recording (see ``reference_peak_db``)."""
    boost = float(np.clip(params.reference_peak_db - speech_peak_db(mel), 0.0, params.max_boost_db))
    return replace(params, gate_db=params.gate_db - boost, full_db=params.full_db - boost)


def articulate(mels: np.ndarray, params: MouthWarpParams = MouthWarpParams()) -> list[Articulation]:
    """One ``Articulation`` per mel window of ``mels`` (B, 80, T) in Wav2Lip units ([-4, 4]).

    Each column is measured on its own (speech-band level through the noise gate, vowel height, lip
    shape), then the columns are averaged with Gaussian weights around ``params.centre_column``: a frame's
    neighbours share most of their columns, so the mouth moves smoothly from frame to frame.
    """
    mels = np.asarray(mels, dtype=np.float64)
    if mels.ndim != 3 or mels.shape[1] != BAND_HZ.size:
        raise ValueError(f"mel windows must be (B, 80, T), got {mels.shape}")
    power = _to_power(mels)

    def level(lo: float, hi: float) -> np.ndarray:
        """(B, T) dB of the summed power of the bands centred in [lo, hi) Hz."""
        return _band_level(power, lo, hi)

    raw = np.clip((level(100.0, 4000.0) - params.gate_db) / (params.full_db - params.gate_db), 0.0, 1.0)
    loud = raw * raw * (3.0 - 2.0 * raw)  # gentle onset above the gate, gentle saturation
    first_formant = np.maximum(level(450.0, 900.0), level(900.0, 1400.0)) - level(150.0, 450.0)
    height = 0.55 + 0.45 * np.clip((first_formant + 5.0) / 25.0, 0.0, 1.0)
    spread = np.tanh((level(1400.0, 3200.0) - level(450.0, 1400.0) - 2.0) / 8.0)

    columns = np.arange(mels.shape[2], dtype=np.float64)
    weights = np.exp(-0.5 * ((columns - params.centre_column) / params.column_sigma) ** 2)
    weights /= weights.sum()
    loudness = loud @ weights
    opening = (loud * height) @ weights
    shape = np.divide((loud * spread) @ weights, loudness, out=np.zeros_like(loudness), where=loudness > 0)
    return [
        Articulation(loudness=float(ld), opening=float(op), shape=float(sh))
        for ld, op, sh in zip(loudness, opening, shape, strict=True)
    ]


def plan_motion(
    landmarks: np.ndarray,
    articulation: Articulation,
    params: MouthWarpParams = MouthWarpParams(),
    beyond_rest: Excess = Excess(),
) -> MouthMotion:
    """Move the lip, corner and jaw landmarks from the mouth as given to rest plus ``articulation``.

    ``beyond_rest`` (see ``excess``) is taken away first: the lips meet, the chin rises, the corners come
    back; then the audio's opening and rounding are applied. Every other point stays.
    """
    source = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    across = source[54] - source[48]
    mouth_width = float(np.linalg.norm(across))
    across = across / max(mouth_width, 1e-6)
    down = np.array([-across[1], across[0]])
    if down[1] < 0:
        down = -down
    reference = 0.5 * (mouth_width + 0.45 * face_width(source))
    loud, opening, shape = articulation.loudness, articulation.opening, articulation.shape

    gap = opening * params.open_ratio * reference * (1.0 - 0.3 * max(shape, 0.0))
    lips = gap - beyond_rest.gap  # the lips' net move: negative closes a mouth open beyond rest
    lower_drop, upper_lift = 0.8 * lips, 0.2 * lips
    corner_drop = 0.25 * lower_drop
    corner_out = loud * reference * (0.06 * max(shape, 0.0) - 0.10 * max(-shape, 0.0)) - 0.5 * beyond_rest.width

    half = max(mouth_width / 2.0, 1e-6)
    u = (source - (source[48] + source[54]) / 2.0) @ across
    r2 = np.clip(np.abs(u) / half, 0.0, 1.0) ** 2
    move_across = np.zeros(68)
    move_down = np.zeros(68)
    move_across[MOUTH] = corner_out * np.clip(u[MOUTH] / half, -1.0, 1.0)
    move_down[LOWER_LIP] = corner_drop + (lower_drop - corner_drop) * (1.0 - r2[LOWER_LIP])
    move_down[UPPER_LIP] = corner_drop * r2[UPPER_LIP] - upper_lift * (1.0 - r2[UPPER_LIP])
    move_down[CORNERS] = corner_drop
    move_down[JAW] = JAW_DROP * 0.8 * gap - JAW_RISE * beyond_rest.jaw
    target = source + move_across[:, None] * across + move_down[:, None] * down

    # The source opening, upper to lower inner lip, parts at seam_ratio; the share of it beyond rest is cut out.
    source_gap = inner_lip_gap(source, down)
    cut = float(np.clip(beyond_rest.gap / source_gap, 0.0, 1.0)) if source_gap > 0 else 0.0
    top_share = params.seam_ratio * (1.0 - cut)
    span = source[INNER_LOWER] - source[INNER_UPPER]
    seam_top = source[INNER_UPPER] + top_share * span
    seam_bottom = source[INNER_UPPER] + (top_share + cut) * span
    return MouthMotion(
        source=source,
        target=target,
        across=across,
        down=down,
        mouth_width=mouth_width,
        reference=reference,
        seam_top=seam_top,
        seam_bottom=seam_bottom,
        opening_top=seam_top + target[INNER_UPPER] - source[INNER_UPPER],
        opening_bottom=seam_bottom + target[INNER_LOWER] - source[INNER_LOWER],
    )


def inner_lip_gap(points: np.ndarray, down: np.ndarray) -> float:
    """Mean opening (pixels, along ``down``) between the inner lips: pairs 61-67, 62-66, 63-65."""
    points = np.asarray(points, dtype=np.float64)
    pairs = np.array([[61, 67], [62, 66], [63, 65]])
    return float(np.mean((points[pairs[:, 1]] - points[pairs[:, 0]]) @ down))


def _shepard(points: np.ndarray, values: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian interpolation of ``values`` (n, 2) at ``points`` (n, 2), sampled at (xs, ys).

    A background weight (a virtual point 3 sigma away with value 0) lets the field fade to 0 far from
    every point. Returns float32 (len(xs), 2).
    """
    dx = xs[:, None] - points[None, :, 0].astype(np.float32)
    dy = ys[:, None] - points[None, :, 1].astype(np.float32)
    weights = np.exp((dx * dx + dy * dy) * np.float32(-0.5 / sigma**2))
    background = np.float32(np.exp(-4.5))
    return (weights @ values.astype(np.float32)) / (weights.sum(axis=1, keepdims=True) + background)


def _neck_anchors(motion: MouthMotion) -> np.ndarray:
    """Points below the chin that stay still, so the dropping chin slides over the neck."""
    width = face_width(motion.source)
    return motion.source[NECK] + motion.down * (0.22 * width)


def _field(
    motion: MouthMotion,
    members: np.ndarray,
    seam: np.ndarray,
    edge: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    sigma: float,
) -> np.ndarray:
    """Backward offsets (source minus output position) from the moved ``members``, the seam points ``seam``
    moved to ``edge`` (the opening's top or bottom) and the still neck."""
    neck = _neck_anchors(motion)
    points = np.vstack([motion.target[members], edge[1:4], neck])
    values = np.vstack([motion.source[members] - motion.target[members], seam[1:4] - edge[1:4], np.zeros_like(neck)])
    return _shepard(points, values, xs, ys, sigma)


def _median_colour(image: np.ndarray, region: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Median BGR of ``image`` where ``region`` is set, or ``fallback`` when it is empty."""
    pixels = image[region]
    return np.median(pixels, axis=0).astype(np.float32) if len(pixels) else fallback


def _poly_mask(points: np.ndarray, shape: tuple[int, int], origin: np.ndarray) -> np.ndarray:
    """Anti-aliased float32 fill (0..1) of the polygon ``points`` drawn into an array of ``shape`` at ``origin``."""
    canvas = np.zeros(shape, dtype=np.uint8)
    scaled = np.round((points - origin) * 16.0).astype(np.int32)
    cv2.fillPoly(canvas, [scaled], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def warp_crop(
    crop: np.ndarray,
    landmarks: np.ndarray,
    articulation: Articulation,
    params: MouthWarpParams = MouthWarpParams(),
    mask: np.ndarray | None = None,
    rest: MouthState | None = None,
) -> WarpResult:
    """Set the mouth of one BGR uint8 crop for ``articulation``; same shape and dtype out.

    ``mask``: the crop's ``render.mouth_mask`` when the caller already has it (the pipeline pastes with it);
    computed here otherwise. ``rest``: the presenter's closed mouth (``pipeline.mouth.rest_state``); a mouth
    open beyond it is closed first (see ``plan_motion``). None: the crop's mouth is taken as at rest.

    Returns the input unchanged (a copy) when the loudness is 0 and the mouth is at rest, the landmarks
    are not finite, the mouth is narrower than 4 pixels or the crop smaller than 8.
    """
    beyond_rest = excess(landmarks, rest, params)
    motion = plan_motion(landmarks, articulation, params, beyond_rest)
    crop = np.ascontiguousarray(crop)
    out = crop.copy()
    h, w = crop.shape[:2]
    usable = bool(np.all(np.isfinite(motion.source))) and motion.mouth_width >= 4.0 and h >= 8 and w >= 8
    if (articulation.loudness <= 0.0 and beyond_rest.at_rest) or not usable:
        return WarpResult(out, motion)
    envelope = mask if mask is not None else mouth_mask(motion.source, (h, w))
    rows = np.flatnonzero(envelope.any(axis=1))
    cols = np.flatnonzero(envelope.any(axis=0))
    if rows.size == 0:
        return WarpResult(out, motion)
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    rh, rw = y1 - y0, x1 - x0
    sigma = max(params.kernel_ratio * motion.reference, 1.0)

    # Smooth fields for the parts above and below the lip seam, on a coarse grid, then bilinear to pixels.
    step = max(int(round(params.grid_ratio * motion.reference)), 2)
    gx = x0 + step * np.arange((rw - 1) // step + 2, dtype=np.float32)
    gy = y0 + step * np.arange((rh - 1) // step + 2, dtype=np.float32)
    cx, cy = np.meshgrid(gx, gy)
    flat_x, flat_y = cx.ravel(), cy.ravel()
    coarse_up = _field(motion, UPPER_FIELD, motion.seam_top, motion.opening_top, flat_x, flat_y, sigma).reshape(
        *cx.shape, 2
    )
    coarse_low = _field(motion, LOWER_FIELD, motion.seam_bottom, motion.opening_bottom, flat_x, flat_y, sigma).reshape(
        *cx.shape, 2
    )
    px, py = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    grid_x, grid_y = (px - x0) / step, (py - y0) / step
    field_up = cv2.remap(coarse_up, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    field_low = cv2.remap(coarse_low, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    # Mouth coordinates of every output pixel: u along the mouth, t towards the chin.
    centre = (motion.target[48] + motion.target[54]) / 2.0
    ax, ay = float(motion.across[0]), float(motion.across[1])
    dx, dy = float(motion.down[0]), float(motion.down[1])
    u = (px - float(centre[0])) * ax + (py - float(centre[1])) * ay
    t = (px - float(centre[0])) * dx + (py - float(centre[1])) * dy
    top, bottom = motion.opening_top - centre, motion.opening_bottom - centre
    tu_u, tu_t = top @ motion.across, top @ motion.down
    tl_u, tl_t = bottom @ motion.across, bottom @ motion.down
    order_u, order_l = np.argsort(tu_u), np.argsort(tl_u)
    upper = np.interp(u, tu_u[order_u], tu_t[order_u]).astype(np.float32)
    lower = np.interp(u, tl_u[order_l], tl_t[order_l]).astype(np.float32)
    gap = np.maximum(lower - upper, 0.0)
    inner_half = max(float(tu_u.max() - tu_u.min()) / 2.0, 1.0)
    beyond = np.maximum(np.abs(u) - inner_half, 0.0)
    soft = 0.6 + 0.3 * beyond
    below = np.clip((t - upper + soft) / (gap + 2.0 * soft), 0.0, 1.0)[..., None]

    weight = envelope[y0:y1, x0:x1, None]
    offset = ((1.0 - below) * field_up + below * field_low) * weight
    map_x = (px + offset[..., 0]).astype(np.float32)
    map_y = (py + offset[..., 1]).astype(np.float32)
    warped = cv2.remap(crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    changed = weight[..., 0] > 0
    window = _interior_window(motion, (y0, y1, x0, x1))
    if window is not None:
        wy0, wy1, wx0, wx1 = window
        inner = (slice(wy0 - y0, wy1 - y0), slice(wx0 - x0, wx1 - x0))
        colour, alpha = _paint_interior(crop, motion, window, u[inner], t[inner], upper[inner], gap[inner], inner_half)
        alpha *= changed[inner]
        part = warped[inner].astype(np.float32)
        part += (colour - part) * alpha[..., None]
        warped[inner] = np.clip(np.rint(part), 0, 255).astype(np.uint8)

    np.copyto(out[y0:y1, x0:x1], warped, where=changed[..., None])
    return WarpResult(out, motion)


def _interior_blur(motion: MouthMotion) -> float:
    """Gaussian sigma (pixels) that softens the edge of the painted mouth interior."""
    return 0.5 + 0.012 * motion.mouth_width


def _interior_window(motion: MouthMotion, roi: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` around the new opening (with room for its blur) inside ``roi``; None when shut."""
    if motion.added_opening() < 0.75:
        return None
    polygon = np.vstack([motion.opening_top, motion.opening_bottom])
    margin = 3.0 * _interior_blur(motion) + 2.0
    ry0, ry1, rx0, rx1 = roi
    y0 = max(int(np.floor(polygon[:, 1].min() - margin)), ry0)
    y1 = min(int(np.ceil(polygon[:, 1].max() + margin)) + 1, ry1)
    x0 = max(int(np.floor(polygon[:, 0].min() - margin)), rx0)
    x1 = min(int(np.ceil(polygon[:, 0].max() + margin)) + 1, rx1)
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


@dataclass(frozen=True)
class MouthPalette:
    """BGR float32 colours of the painted mouth interior, derived from the person's own lips and skin."""

    cavity: np.ndarray
    tongue: np.ndarray
    teeth: np.ndarray


def mouth_palette(crop: np.ndarray, landmarks: np.ndarray) -> MouthPalette:
    """Colours for the interior: the cavity and tongue are darkened lip colour (median of the lip pixels),
    the teeth an off-white lit like the skin around the mouth."""
    points = np.asarray(landmarks, dtype=np.float64)
    h, w = crop.shape[:2]
    outer = points[OUTER_LIP]
    pad = 0.3 * float(np.linalg.norm(points[54] - points[48])) + 2.0
    x0 = int(np.clip(np.floor(outer[:, 0].min() - pad), 0, w))
    x1 = int(np.clip(np.ceil(outer[:, 0].max() + pad) + 1, x0, w))
    y0 = int(np.clip(np.floor(outer[:, 1].min() - pad), 0, h))
    y1 = int(np.clip(np.ceil(outer[:, 1].max() + pad) + 1, y0, h))
    fallback_lip = np.array([90.0, 90.0, 150.0], dtype=np.float32)
    if x1 <= x0 or y1 <= y0:
        lip, skin = fallback_lip, np.array([150.0, 170.0, 200.0], dtype=np.float32)
    else:
        stride = max(int(pad) // 12, 1)  # colour statistics need no more than ~40 samples across the mouth
        roi = crop[y0:y1:stride, x0:x1:stride]
        origin = np.array([x0, y0], dtype=np.float64)
        local = (points - origin) / stride  # landmarks in the subsampled roi's pixels
        mouth = _poly_mask(local[OUTER_LIP], roi.shape[:2], np.zeros(2))
        lips = (mouth > 0.5) & (_poly_mask(local[INNER_LIP], roi.shape[:2], np.zeros(2)) < 0.5)
        lip = _median_colour(roi, lips, fallback_lip)
        skin = _median_colour(roi, mouth == 0.0, lip)
    light = float(np.clip((0.114 * skin[0] + 0.587 * skin[1] + 0.299 * skin[2]) / 170.0, 0.35, 1.1))
    return MouthPalette(
        cavity=lip * np.array([0.16, 0.17, 0.26], dtype=np.float32),
        tongue=lip * np.array([0.40, 0.42, 0.62], dtype=np.float32),
        teeth=np.array([196.0, 206.0, 214.0], dtype=np.float32) * light,
    )


def _paint_interior(
    crop: np.ndarray,
    motion: MouthMotion,
    window: tuple[int, int, int, int],
    u: np.ndarray,
    t: np.ndarray,
    upper: np.ndarray,
    gap: np.ndarray,
    inner_half: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Colour (wh, ww, 3 float32) and coverage (wh, ww float32) of the new opening inside ``window``.

    ``u``/``t`` are the window's pixels in mouth coordinates, ``upper`` the opening's top edge and ``gap``
    its height along ``t``. Layers, from the top edge down: a band of upper teeth (shaded under the lip,
    fading into the corners, left out where the mouth as given already shows teeth), the dark oral cavity,
    a darker red tongue towards the lower lip; everything darker towards the corners.
    """
    y0, y1, x0, x1 = window
    origin = np.array([x0, y0], dtype=np.float64)
    polygon = np.vstack([motion.opening_top, motion.opening_bottom[3:0:-1]])
    alpha = cv2.GaussianBlur(_poly_mask(polygon, (y1 - y0, x1 - x0), origin), (0, 0), _interior_blur(motion))
    palette = mouth_palette(crop, motion.source)

    across = np.clip(np.abs(u) / inner_half, 0.0, 1.0)
    depth = t - upper  # pixels below the opening's top edge
    v = np.clip(depth / np.maximum(gap, 1e-3), 0.0, 1.0)

    colour = np.broadcast_to(palette.cavity, (*u.shape, 3)).copy()
    tongue_w = np.clip((v - 0.45) / 0.45, 0.0, 1.0)
    tongue_w = (tongue_w * tongue_w * (3.0 - 2.0 * tongue_w) * (1.0 - across**2) * 0.85)[..., None]
    colour += (palette.tongue - colour) * tongue_w
    # Upper teeth show at the top of a new opening, unless the part of the mouth as given that is kept shows them.
    kept = inner_lip_gap(motion.source, motion.down) - float((motion.seam_bottom[2] - motion.seam_top[2]) @ motion.down)
    shown = kept / max(0.12 * motion.mouth_width, 1e-6)
    band = np.minimum(0.4 * gap, 0.1 * motion.mouth_width) * float(np.clip(1.0 - shown, 0.0, 1.0))
    teeth_w = np.clip((band - depth) / 1.2 + 0.5, 0.0, 1.0) * np.clip(band / 1.5, 0.0, 1.0)
    teeth_w *= np.clip(1.0 - across**2, 0.0, 1.0) ** 1.5
    shade = 0.6 + 0.4 * np.clip(depth / np.maximum(0.6 * band, 0.5), 0.0, 1.0)
    shade *= 0.75 + 0.25 * np.clip(gap / (0.2 * motion.mouth_width), 0.0, 1.0)  # a narrow opening is in shadow
    colour += (palette.teeth * shade[..., None] - colour) * teeth_w[..., None]
    colour *= (1.0 - 0.55 * across**3)[..., None]
    return colour.astype(np.float32), alpha


class MouthWarpEngine:
    """The default engine: needs no weights, runs on any CPU (see the module docstring).

    Between batches it holds only the levels ``prepare`` derived from the current recording; each crop
    depends on its own landmarks and mel window.
    """

    name: str = "mouthwarp"
    identity: str = f"mouthwarp-{VERSION}"
    needs: EngineNeeds = EngineNeeds(footage_warnings=True)
    batch_size: int = BATCH_FRAMES
    """Frames per render batch (``run.batch_frames``)."""

    def __init__(self, params: MouthWarpParams | None = None) -> None:
        self.params = params if params is not None else MouthWarpParams()
        self._levels = self.params
        self._closed = False

    def prepare(self, mel: np.ndarray) -> None:
        """Adapt the loudness levels to this recording, so a quiet one still opens the mouth."""
        self._levels = levelled(self.params, mel)

    def generate(self, batch: FaceBatch) -> list[np.ndarray]:
        """One output crop per input crop, same shape and dtype (uint8 BGR)."""
        if self._closed:
            raise RuntimeError("MouthWarpEngine used after close()")
        if len(batch.landmarks) != len(batch) or len(batch.mels) != len(batch):
            raise ValueError(
                f"batch of {len(batch)} crops has {len(batch.landmarks)} landmark sets "
                f"and {len(batch.mels)} mel windows"
            )
        if len(batch) == 0:
            return []
        moves = articulate(batch.mels, self._levels)
        masks = batch.masks if batch.masks is not None else [None] * len(batch)
        return [
            warp_crop(crop, points, move, self._levels, mask, batch.mouth_rest).image
            for crop, points, move, mask in zip(batch.crops, batch.landmarks, moves, masks, strict=True)
        ]

    def release(self) -> None:
        """Nothing is cached between batches; nothing to free."""

    def close(self) -> None:
        """Mark the engine closed; later ``generate`` calls raise."""
        self._closed = True
