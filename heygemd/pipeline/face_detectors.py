"""Face detectors: where faces are in one frame, and their 68 landmarks.

Two implementations of the :class:`FaceDetector` protocol:

* :class:`DlibDetector` — dlib's frontal HOG detector and the 68-point shape predictor shipped by the
  ``face-recognition-models`` package. Offline, CPU only, no torch; the default.
* :class:`S3FDDetector` — the S3FD detector Wav2Lip was trained with (via ``face_alignment``), used when the
  user placed ``s3fd-619a316812.pth`` in the models folder. Landmarks come from 2DFAN4 when
  ``2DFAN4-11f355bf06.pth.tar`` is there too, else from dlib's shape predictor on the S3FD box.

Both give boxes as float32 ``(x1, y1, x2, y2)`` in the pixels of the image they were given and landmarks as
float32 ``(68, 2)`` ``(x, y)`` in the iBUG 68-point layout (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
mouth 48-67). Weights are never downloaded: a missing file raises :class:`~heygemd.errors.CheckpointError`.
torch is imported only inside :class:`S3FDDetector`'s constructor, which is handed the engines' device resolver
(the pipeline imports no engine).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import cv2
import dlib
import numpy as np

from heygemd.errors import CheckpointError, ConfigError
from heygemd.fsutil import own_dir

DetectorKind = Literal["auto", "dlib", "s3fd"]

S3FD_WEIGHTS = "s3fd-619a316812.pth"
"""File name of the S3FD detector weights in the models folder (the name face_alignment itself uses)."""
FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
"""File name of the 2DFAN4 landmark weights in the models folder (the name face_alignment itself uses)."""
FAN_URL_SOURCE = "https://www.adrianbulat.com/downloads/python-fan/"
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one BGR uint8 frame and fits 68 landmarks to one of them."""

    name: str
    """Short identity of the detector and its landmark model (used in cache fingerprints and status)."""

    def detect(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        """Face boxes, each float32 ``(x1, y1, x2, y2)`` in ``frame_bgr`` pixels, most confident first."""
        ...

    def landmarks(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        """float32 ``(68, 2)`` landmarks of the face in ``box`` (unpadded, ``frame_bgr`` pixels)."""
        ...


def shape_predictor_path() -> Path:
    """Path of dlib's 68-point shape predictor inside the installed ``face_recognition_models`` package.

    Found with ``importlib.util.find_spec`` (which does not run the package's ``__init__``: that imports
    ``pkg_resources``, which current setuptools no longer ships).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "models" / SHAPE_PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        "dlib's 68-point face landmark model was not found",
        path=SHAPE_PREDICTOR_FILE,
        hint="Install it with: pip install face-recognition-models (it ships shape_predictor_68_face_landmarks.dat).",
    )


def _dlib_rect(box: np.ndarray) -> dlib.rectangle:
    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    return dlib.rectangle(x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))


class DlibShapePredictor:
    """dlib's 68-point landmark regressor (about 1-2 ms a face on a CPU).

    The model (a 95 MB file, ~70 MiB in memory) is read at the first call, not here: a render whose face track
    is cached never needs it. Here only the file's presence is checked (CheckpointError when it is missing);
    a file dlib cannot read raises CheckpointError naming it at the first call.
    """

    def __init__(self, path: Path | None = None):
        self.path = path if path is not None else shape_predictor_path()
        if not self.path.is_file():
            raise CheckpointError(
                "dlib's 68-point face landmark model was not found",
                path=self.path,
                hint="Install it with: pip install face-recognition-models "
                "(it ships shape_predictor_68_face_landmarks.dat).",
            )
        self._predictor: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model has been read (the first call reads it)."""
        return self._predictor is not None

    def _model(self) -> Any:
        with self._lock:
            if self._predictor is None:
                try:
                    self._predictor = dlib.shape_predictor(str(self.path))
                except RuntimeError as exc:  # dlib's serialization errors
                    raise CheckpointError(
                        f"cannot read dlib's 68-point face landmark model: {str(exc).strip()[:200]}",
                        path=self.path,
                        hint="The file is damaged; reinstall it with: pip install --force-reinstall "
                        "face-recognition-models.",
                    ) from exc
            return self._predictor

    def __call__(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        # dlib silently finds nothing in non-contiguous arrays; it works on intensities, so BGR is fine.
        shape = self._model()(np.ascontiguousarray(frame_bgr), _dlib_rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class DlibDetector:
    """dlib frontal-face HOG detector plus the 68-point shape predictor; offline and CPU only. The landmark
    model is read at the first face (``DlibShapePredictor``), so a warm session that only renders cached face
    tracks never holds it.

    ``upsample``: how often dlib doubles the image before detecting (0 finds faces from about 80 px,
    1 from about 40 px at four times the cost). ``retry_upsampled``: when nothing is found, try once more
    with one more upsampling step, so smaller faces are still found (costs only on frames without a face).
    """

    name = "dlib-hog"

    def __init__(self, *, upsample: int = 0, retry_upsampled: bool = True, predictor_path: Path | None = None):
        self.upsample = upsample
        self.retry_upsampled = retry_upsampled
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = DlibShapePredictor(predictor_path)

    def detect(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)  # contiguous, as dlib needs
        rects, scores, _ = self._detector.run(rgb, self.upsample, 0.0)
        if len(rects) == 0 and self.retry_upsampled:
            rects, scores, _ = self._detector.run(rgb, self.upsample + 1, 0.0)
        order: np.ndarray | list[int] = np.argsort(-np.asarray(scores, dtype=np.float64)) if len(rects) else []
        return [
            np.array([rects[i].left(), rects[i].top(), rects[i].right(), rects[i].bottom()], dtype=np.float32)
            for i in order
        ]

    @property
    def loaded(self) -> bool:
        """Whether the landmark model has been read."""
        return self._predictor.loaded

    def landmarks(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self._predictor(frame_bgr, box)


@contextmanager
def _torch_home(path: Path) -> Iterator[None]:
    """Point ``$TORCH_HOME`` at ``path`` while face_alignment looks up its weights, then restore it."""
    before = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = before


def _link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` a symlink to ``source`` (a copy where symlinks are not possible)."""
    if target.is_symlink() or target.exists():
        if target.resolve() == source.resolve():
            return
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, target)


class S3FDDetector:
    """S3FD boxes (as Wav2Lip detects them) with 2DFAN4 or dlib landmarks.

    ``models_dir`` must hold ``s3fd-619a316812.pth``; ``2DFAN4-11f355bf06.pth.tar`` is optional. face_alignment
    finds 2DFAN4 under ``$TORCH_HOME/hub/checkpoints/``, so a private torch home under
    ``cache_dir/torch-home`` gets symlinks to the models folder's files and ``$TORCH_HOME`` points there
    only while the networks are built. ``device``: as ``engine.device`` spells it, turned into a torch device name
    by ``resolve_device`` (the session hands in ``heygemd.engines.torch_device_name``, which knows ``auto``: CUDA
    when available); without one, a torch device name as is (``cpu``, ``cuda:0``). ``threshold``: minimum S3FD
    confidence of a face (face_alignment's default 0.5).
    """

    def __init__(
        self,
        models_dir: Path,
        cache_dir: Path,
        *,
        device: str = "cpu",
        resolve_device: Callable[[str], str] = str,
        threshold: float = 0.5,
    ):
        s3fd_file = models_dir / S3FD_WEIGHTS
        if not s3fd_file.is_file():
            raise CheckpointError(
                "S3FD face-detector weights not found",
                path=s3fd_file,
                hint=f"Put {S3FD_WEIGHTS} (from {FAN_URL_SOURCE}) in the models folder, "
                'or set faces.detector = "dlib", which needs no weights.',
            )
        fan_file = models_dir / FAN_WEIGHTS
        checkpoints = own_dir(cache_dir, "torch-home", "hub", "checkpoints")
        _link_or_copy(s3fd_file, checkpoints / S3FD_WEIGHTS)
        use_fan = fan_file.is_file()
        if use_fan:
            _link_or_copy(fan_file, checkpoints / FAN_WEIGHTS)

        self.device = resolve_device(device)  # torch only once S3FD weights are in use
        self._fan: Any = None
        self._dlib: DlibShapePredictor | None = None
        try:
            self._build(checkpoints, use_fan, threshold, cache_dir / "torch-home")
        except (
            RuntimeError,
            pickle.UnpicklingError,
            EOFError,
            IndexError,
            KeyError,
            ValueError,
            AttributeError,
        ) as exc:
            raise CheckpointError(
                f"cannot load the S3FD/2DFAN4 weights: {str(exc).strip().splitlines()[0][:200]}",
                path=models_dir,
                hint=f"Replace {S3FD_WEIGHTS} (and {FAN_WEIGHTS} if present) with intact copies from "
                f'{FAN_URL_SOURCE}, or set faces.detector = "dlib".',
            ) from exc
        if not use_fan:
            self._dlib = DlibShapePredictor()
        self.name = "s3fd+2dfan4" if use_fan else "s3fd+dlib68"

    def _build(self, checkpoints: Path, use_fan: bool, threshold: float, torch_home: Path) -> None:
        """Construct the networks with ``$TORCH_HOME`` pointing at the private torch home."""
        with _torch_home(torch_home):
            import torch.hub
            from face_alignment.detection.sfd.sfd_detector import SFDDetector

            if not use_fan:
                self._sfd = SFDDetector(
                    self.device, path_to_detector=str(checkpoints / S3FD_WEIGHTS), filter_threshold=threshold
                )
            else:
                # face_alignment would download a file missing from the hub folder; make sure it is there.
                expected = Path(torch.hub.get_dir()) / "checkpoints" / FAN_WEIGHTS
                if not expected.is_file():
                    raise CheckpointError(
                        "2DFAN4 weights are not where face_alignment looks for them (torch.hub.set_dir was "
                        "called elsewhere?)",
                        path=expected,
                        hint="Remove 2DFAN4-11f355bf06.pth.tar from the models folder to use dlib landmarks.",
                    )
                import face_alignment

                self._fan = face_alignment.FaceAlignment(
                    face_alignment.LandmarksType.TWO_D,
                    device=self.device,
                    flip_input=False,
                    face_detector="sfd",
                    face_detector_kwargs={
                        "path_to_detector": str(checkpoints / S3FD_WEIGHTS),
                        "filter_threshold": threshold,
                    },
                    compile=False,
                )
                self._sfd = self._fan.face_detector

    def detect(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])  # face_alignment takes RGB
        found = self._sfd.detect_from_image(rgb)
        ranked = sorted((np.asarray(d, dtype=np.float32) for d in found), key=lambda d: -float(d[4]))
        return [d[:4].copy() for d in ranked]

    def landmarks(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        if self._fan is None:
            assert self._dlib is not None
            return self._dlib(frame_bgr, box)
        rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
        points = self._fan.get_landmarks_from_image(rgb, detected_faces=[np.asarray(box[:4], dtype=np.float64)])
        return np.asarray(points[0][:, :2], dtype=np.float32)


def make_detector(
    kind: DetectorKind,
    models_dir: Path,
    cache_dir: Path,
    *,
    device: str = "cpu",
    resolve_device: Callable[[str], str] = str,
) -> FaceDetector:
    """The detector ``faces.detector`` asks for; ``auto`` is S3FD when its weights are in ``models_dir``, else dlib.

    ``device`` and ``resolve_device`` matter only for S3FD (see :class:`S3FDDetector`).
    """
    if kind == "dlib":
        return DlibDetector()
    if kind == "s3fd" or (kind == "auto" and (models_dir / S3FD_WEIGHTS).is_file()):
        return S3FDDetector(models_dir, cache_dir, device=device, resolve_device=resolve_device)
    if kind == "auto":
        return DlibDetector()
    raise ConfigError(f"unknown face detector {kind!r}", hint="Set faces.detector to auto, dlib or s3fd.")
