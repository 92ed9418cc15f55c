"""Independent feature references, shared by the fbank tests (CPU now, CUDA later).

- transformers' numpy Kaldi path at AST's 128 bins (float64 inside);
- kaldi-native-fbank at the bin counts it accepts (it refuses 128 bins from 20 Hz: filter 3 is empty);
- the original ``torchaudio.compliance.kaldi`` when ``.ci/run`` has fetched it (see ``torchaudio_fbank``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

#: Where .ci/run unpacks torchaudio's pure-Python kaldi.py (torchaudio itself does not import beside
#: this torch build, but that one file only needs torch).
TORCHAUDIO_KALDI = Path(os.environ.get("ASTEDGE_TORCHAUDIO_KALDI", Path(__file__).parent / ".cache" / "kaldi.py"))


def hf_logmel(wave: np.ndarray) -> np.ndarray:
    """transformers' numpy Kaldi path with AST's arguments, [frames, 128]."""
    from transformers import ASTFeatureExtractor
    from transformers.audio_utils import spectrogram, window_function

    return spectrogram(
        wave, window_function(400, "hann", periodic=False), frame_length=400, hop_length=160, fft_length=512,
        power=2.0, center=False, preemphasis=0.97, mel_filters=ASTFeatureExtractor().mel_filters, log_mel="log",
        mel_floor=1.192092955078125e-07, remove_dc_offset=True,
    ).T


def knf_logmel(wave: np.ndarray, bins: int) -> np.ndarray:
    """kaldi-native-fbank configured like AST (dither 0, hanning, snip_edges, 20 Hz..Nyquist, no energy)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.snip_edges = True
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.use_energy = False
    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(16000, wave.tolist())
    extractor.input_finished()
    return np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])


def torchaudio_fbank(wave: np.ndarray) -> np.ndarray:
    """The original: torchaudio.compliance.kaldi.fbank exactly as AST calls it (skips if not fetched)."""
    if not TORCHAUDIO_KALDI.is_file():
        pytest.skip(f"torchaudio's kaldi.py not fetched to {TORCHAUDIO_KALDI} (.ci/run does it)")
    import torch

    spec = importlib.util.spec_from_file_location("torchaudio_kaldi_reference", TORCHAUDIO_KALDI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fbank(torch.from_numpy(np.ascontiguousarray(wave))[None], htk_compat=True, sample_frequency=16000,
                        use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10).numpy()


def within_db(reference: np.ndarray, db: float) -> np.ndarray:
    """Cells no more than `db` below their frame's strongest band (float32 resolves these)."""
    return reference >= reference.max(axis=-1, keepdims=True) - db / 10 * np.log(10)
