"""Loading MuseTalk 1.5's three models from local files, refusing anything broken with BAD_CHECKPOINT.

As the reference loads them (musetalk/models/unet.py, vae.py, scripts/realtime_inference.py): diffusers
``UNet2DConditionModel(**musetalk.json)`` + a strict ``load_state_dict(unet.pth)``, diffusers
``AutoencoderKL.from_pretrained(sd-vae/)``, transformers ``WhisperModel.from_pretrained(whisper/)`` (only its
encoder is kept) and ``WhisperFeatureExtractor``. Everything is read with ``local_files_only=True``: no hub call,
even when a file is missing (the layout is checked first). A file that is missing, truncated, of another kind,
or whose tensors do not have the shapes its config promises, is a CheckpointError naming that file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from transformers import WhisperFeatureExtractor, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import logging as transformers_logging

from heygemd.engines import musetalk_layout as layout
from heygemd.engines import pretrained
from heygemd.engines.model_files import ModelFiles
from heygemd.engines.pretrained import READ_ERRORS, detail, loading_problems, read_json
from heygemd.engines.torch_util import check_state_dict, read_state_dict
from heygemd.errors import CheckpointError

PROMPT_WIDTH = 384
"""Width of one audio token: whisper-tiny's d_model, the UNet's cross_attention_dim."""
HIDDEN_STATES = 5
"""Whisper hidden states stacked per 20 ms step: the embedding output plus 4 encoder layers (whisper-tiny)."""
LATENT_CHANNELS = 4


def _fail(message: str, path: Path) -> CheckpointError:
    return CheckpointError(message, path=path, hint=layout.HINT)


def load_unet(files: ModelFiles) -> UNet2DConditionModel:
    """The v1.5 UNet, fp32 on the CPU in eval mode, every tensor of ``unet.pth`` checked against the config.

    One copy of the weights in memory: the module is built on the meta device and takes the tensors read from
    the file (read, not mapped, so the file's pages do not count beside them) as its own (``assign=True``)."""
    config_path, weights_path = files["unet_config"], files["unet"]
    config = {k: v for k, v in read_json(config_path, layout.HINT).items() if not k.startswith("_")}
    try:
        with torch.device("meta"):  # no storage: the checkpoint's tensors become the module's own
            unet = UNet2DConditionModel(**config)
    except (TypeError, ValueError) as exc:
        raise _fail(f"not a UNet2DConditionModel config ({detail(exc)})", config_path) from None
    if unet.config.in_channels != 2 * LATENT_CHANNELS or unet.config.cross_attention_dim != PROMPT_WIDTH:
        raise _fail(
            f"in_channels {unet.config.in_channels} / cross_attention_dim {unet.config.cross_attention_dim}: "
            f"MuseTalk 1.5 has 8 / 384 (is this the v1.5 musetalk.json?)",
            config_path,
        )
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    state = read_state_dict(weights_path, hint=layout.HINT, mmap=False)
    check_state_dict(state, expected, weights_path, what="the UNet of musetalk.json", hint=layout.HINT)
    # as a copying load would: the model in fp32 whatever the file's dtype (each read tensor dropped once converted)
    unet.load_state_dict({key: state.pop(key).float() for key in list(state)}, strict=True, assign=True)
    return unet.eval()


def load_vae(files: ModelFiles) -> AutoencoderKL:
    """sd-vae-ft-mse, fp32 on the CPU in eval mode (diffusers converts the 2022 attention names)."""
    return pretrained.load_vae(files["vae_config"], files["vae"], engine="MuseTalk", hint=layout.HINT)


def load_whisper(whisper_dir: Path) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """whisper-tiny's encoder (fp32, CPU, eval) and its feature extractor (80-bin log-mel, 30 s segments),
    from ``models/musetalk/whisper/``."""
    whisper_dir = Path(whisper_dir)

    def needed(*names: str) -> Path:
        for name in names:
            if (whisper_dir / Path(name).name).is_file():
                return whisper_dir / Path(name).name
        raise _fail(
            f"MuseTalk file missing: {' or '.join(Path(n).name for n in names)}", whisper_dir / Path(names[-1]).name
        )

    config_path, preprocessor = needed(layout.WHISPER_CONFIG), needed(layout.WHISPER_PREPROCESSOR)
    weights = needed(*layout.WHISPER_WEIGHTS)
    config = read_json(config_path, layout.HINT)
    d_model, layers = config.get("d_model"), config.get("encoder_layers")
    if d_model != PROMPT_WIDTH or layers != HIDDEN_STATES - 1:
        raise _fail(f"d_model {d_model}, encoder_layers {layers}: MuseTalk 1.5 uses whisper-tiny (384, 4)", config_path)
    try:
        extractor = WhisperFeatureExtractor.from_pretrained(whisper_dir, local_files_only=True)
    except READ_ERRORS as exc:
        raise _fail(f"not a Whisper feature extractor config ({detail(exc)})", preprocessor) from None
    transformers_logging.disable_progress_bar()  # no progress bars in the daemon's log
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = WhisperModel.from_pretrained(
                whisper_dir,
                local_files_only=True,
                output_loading_info=True,
                use_safetensors=weights.suffix == ".safetensors",
            )
    except READ_ERRORS as exc:
        raise _fail(
            f"cannot load Whisper, the file may be truncated or not whisper-tiny ({detail(exc)})", weights
        ) from None
    # transformers annotates from_pretrained as returning the model; output_loading_info=True returns (model, info)
    model, info = cast(tuple[WhisperModel, dict[str, Any]], loaded)
    problems = loading_problems(info)
    if problems:
        raise _fail("the weights do not fit config.json: " + "; ".join(problems), weights)
    encoder = model.get_encoder()
    del model
    return encoder.eval(), extractor
