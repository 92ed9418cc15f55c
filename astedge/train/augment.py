"""Waveform augmentation of training clips: a talker (speed, pitch, timing), a room (reverberation), noise, a
microphone (telephone band, low-pass or a spectral tilt) and a level, drawn anew for every clip in every epoch.

:class:`WaveAugment` is the recipe's description (every step's probability and range; recipe.json records it);
:class:`Augmenter` runs it. The signal processing is audiomentations' (numpy-only: filters, pitch shift,
coloured noise, shift, gain) and soxr's (speed) where they do the job; pyroomacoustics synthesizes a small bank
of rooms once per run (:mod:`astedge.train.rooms`). Written here: mixing a user's noise recordings held in
memory, reverberating with a bank held in memory (audiomentations reads both from disk per clip), speed
perturbation by resampling, and the seeding. audiomentations draws from Python's and numpy's global random
state; :func:`seeded` sets both from (seed, epoch, clip) around each clip and restores them after, so a clip's
augmentation is the same whatever the worker count, and the rest of the process is untouched.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from astedge.errors import UserError


@dataclass(frozen=True)
class WaveAugment:
    """Which waveform augmentations a training clip gets, with what probability and range.

    Each epoch a clip is augmented with probability `p` (0: off); its features are then recomputed, while the
    other clips keep their cached log-mel. An augmented clip goes through the steps in this order, each with its
    own probability: speed (resampling: tempo and pitch together), pitch (tempo kept), time shift (zero-filled),
    reverberation (`rir_dir`'s impulse responses, else `rooms` synthesized rooms of reverberation time in `rt60`),
    band (one of: the telephone band, a low-pass, a high-shelf tilt, at the odds of `band_mix`), noise at an SNR
    over the whole clip (`noise_dir`'s recordings, else coloured noise of a spectral slope in `noise_slope`
    dB/octave), gain.
    """

    p: float = 0.8
    speed_p: float = 0.3
    speed: tuple[float, float] = (0.9, 1.1)
    pitch_p: float = 0.3
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)
    shift_p: float = 0.5
    shift_seconds: tuple[float, float] = (-0.1, 0.1)
    reverb_p: float = 0.4
    rir_dir: str = ""
    rt60: tuple[float, float] = (0.2, 0.7)
    rooms: int = 16
    band_p: float = 0.4
    band_mix: tuple[float, float, float] = (1.0, 1.0, 1.0)  # odds of the telephone band, a low-pass, a tilt
    telephone_hz: tuple[float, float] = (300.0, 3400.0)
    lowpass_hz: tuple[float, float] = (2000.0, 6000.0)
    tilt_db: tuple[float, float] = (-9.0, 9.0)
    noise_p: float = 0.6
    noise_dir: str = ""
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_slope: tuple[float, float] = (-6.0, 3.0)
    gain_p: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 12.0)

    def with_values(self, values: dict, coerce) -> "WaveAugment":
        """These settings with `values` (names of fields; `coerce(current, name, value)` parses strings)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown augment field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: coerce(getattr(self, k), f"augment.{k}", v) for k, v in values.items()})

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty when they are usable)."""
        out = [f"augment.{k} must be in [0, 1]" for k, v in asdict(self).items()
               if (k == "p" or k.endswith("_p")) and not 0.0 <= v <= 1.0]
        out += [f"augment.{k} must be (low, high) with low <= high" for k, v in asdict(self).items()
                if isinstance(v, tuple) and k != "band_mix" and (len(v) != 2 or v[0] > v[1])]
        if len(self.band_mix) != 3 or min(self.band_mix) < 0 or sum(self.band_mix) <= 0:
            out.append("augment.band_mix must be three odds >= 0 (telephone, low-pass, tilt), not all 0")
        if self.speed[0] <= 0 or self.rt60[0] < 0.1 or self.rooms < 1 or self.lowpass_hz[0] <= 0:
            out.append("augment.speed and lowpass_hz must be > 0, rt60 >= 0.1 s and rooms >= 1")
        for name in ("noise_dir", "rir_dir"):
            folder = getattr(self, name)
            if folder and not _audio_files(folder):
                out.append(f"augment.{name} {folder} is not a folder of audio files")
        return out

    def describe(self) -> str:
        """A few words for the run's log."""
        if not self.p:
            return "no waveform augmentation"
        steps = [name for name, prob in (("speed", self.speed_p), ("pitch", self.pitch_p), ("shift", self.shift_p),
                                         ("rooms", self.reverb_p), ("band", self.band_p), ("noise", self.noise_p),
                                         ("gain", self.gain_p)) if prob]
        return f"waveform augmentation of {self.p:.0%} of the clips each epoch ({', '.join(steps)})"


#: Augmentation off: AST's published recipes and the demo's.
OFF = WaveAugment(p=0.0)


def _audio_files(folder: str | Path) -> list[Path]:
    """The audio files under `folder` (none when it is not a folder)."""
    from astedge.audio.decode import find_audio_files

    return find_audio_files(folder) if Path(folder).is_dir() else []


def load_bank(folder: str | Path, rate: int) -> list[np.ndarray]:
    """Every audio file under `folder` as float32 mono at `rate` (a bad file: a UserError naming it)."""
    from astedge.audio.decode import load_audio

    files = _audio_files(folder)
    if not files:
        raise UserError("is not a folder of audio files", folder)
    bank = [load_audio(path, rate) for path in files]
    silent = [path for path, wave in zip(files, bank) if not np.any(wave)]
    if silent:
        raise UserError("is silent (all zeros): a noise recording or impulse response needs sound", silent[0])
    return bank


@contextmanager
def seeded(key: tuple[int, ...]):
    """Python's and numpy's global random state seeded from `key` inside the block, restored after it."""
    saved_py, saved_np = random.getstate(), np.random.get_state()
    state = np.random.SeedSequence(list(key)).generate_state(4)
    random.seed(int.from_bytes(state.tobytes(), "little"))
    np.random.seed(state)
    try:
        yield
    finally:
        random.setstate(saved_py)
        np.random.set_state(saved_np)


def _custom_steps():
    """The three steps audiomentations has no in-memory form of, on its base class (its p and parameters).
    Imported when augmentation is used: audiomentations takes a second to import."""
    from audiomentations.core.transforms_interface import BaseWaveformTransform as base
    from audiomentations.core.utils import calculate_desired_noise_rms as noise_rms, calculate_rms as rms

    class Speed(base):
        """Speed perturbation: the clip resampled to play `factor` times faster (pitch and tempo together)."""

        def __init__(self, low: float, high: float, p: float):
            super().__init__(p)
            self.low, self.high = low, high

        def randomize_parameters(self, samples, sample_rate):
            super().randomize_parameters(samples, sample_rate)
            self.parameters["factor"] = random.uniform(self.low, self.high)

        def apply(self, samples, sample_rate):
            import soxr

            return soxr.resample(samples, sample_rate * self.parameters["factor"], sample_rate).astype(np.float32)

    class Reverb(base):
        """Convolution with one impulse response of a bank (FFT overlap-add), cut to the clip and at its level."""

        def __init__(self, bank: list[np.ndarray], p: float):
            super().__init__(p)
            self.bank = bank

        def randomize_parameters(self, samples, sample_rate):
            super().randomize_parameters(samples, sample_rate)
            self.parameters["room"] = random.randrange(len(self.bank))

        def apply(self, samples, sample_rate):
            from scipy.signal import oaconvolve

            wet = oaconvolve(samples, self.bank[self.parameters["room"]])[: len(samples)]
            level = rms(wet)
            return (wet * (rms(samples) / level) if level > 0 else wet).astype(np.float32)

    class Recorded(base):
        """A random stretch of one noise recording (looped when shorter than the clip) at an SNR over the clip."""

        def __init__(self, bank: list[np.ndarray], low_db: float, high_db: float, p: float):
            super().__init__(p)
            self.bank, self.low_db, self.high_db = bank, low_db, high_db

        def randomize_parameters(self, samples, sample_rate):
            super().randomize_parameters(samples, sample_rate)
            self.parameters["snr_db"] = random.uniform(self.low_db, self.high_db)
            self.parameters["recording"] = index = random.randrange(len(self.bank))
            self.parameters["offset"] = random.randrange(max(1, len(self.bank[index]) - len(samples) + 1))

        def apply(self, samples, sample_rate):
            recording = self.bank[self.parameters["recording"]]
            noise = np.resize(recording[self.parameters["offset"]:], len(samples))
            scale = noise_rms(rms(samples), self.parameters["snr_db"]) / max(rms(noise), 1e-12)
            return (samples + scale * noise).astype(np.float32)

    return Speed, Reverb, Recorded


class Augmenter:
    """Runs a :class:`WaveAugment` on 1-D float32 clips at `rate`; noise and rooms are loaded or made once here."""

    def __init__(self, spec: WaveAugment, rate: int, seed: int = 0):
        from astedge.train.rooms import synthesize_rooms

        self.spec, self.rate = spec, rate
        self.noises = load_bank(spec.noise_dir, rate) if spec.noise_p and spec.noise_dir else []
        self.rooms: list[np.ndarray] = []
        if spec.reverb_p:
            self.rooms = load_bank(spec.rir_dir, rate) if spec.rir_dir else \
                synthesize_rooms(spec.rooms, spec.rt60, rate, seed).responses
        self.chain = self._chain()

    def _chain(self):
        import audiomentations as am

        s = self.spec
        speed, reverb, recorded = _custom_steps()
        low, high = s.telephone_hz
        center = (low + high) / 2  # audiomentations' band: center +- bandwidth / 2
        band = am.OneOf([
            am.BandPassFilter(center, center, (high - low) / center, (high - low) / center, 12, 24, p=1.0),
            am.LowPassFilter(*s.lowpass_hz, min_rolloff=12, max_rolloff=24, p=1.0),
            am.HighShelfFilter(1000.0, 4000.0, *s.tilt_db, min_q=0.5, max_q=0.707, p=1.0)], p=s.band_p,
            weights=list(s.band_mix))
        noise = recorded(self.noises, *s.snr_db, p=s.noise_p) if self.noises else \
            am.AddColorNoise(*s.snr_db, *s.noise_slope, p=s.noise_p)
        steps = [speed(*s.speed, p=s.speed_p),
                 am.PitchShift(*s.pitch_semitones, method="signalsmith_stretch", p=s.pitch_p),
                 am.Shift(*s.shift_seconds, shift_unit="seconds", rollover=False, p=s.shift_p),
                 reverb(self.rooms, p=s.reverb_p) if self.rooms else None, band, noise,
                 am.Gain(*s.gain_db, p=s.gain_p)]
        return am.Compose([step for step in steps if step is not None and step.p > 0])

    def __call__(self, wave: np.ndarray, key: tuple[int, ...]) -> np.ndarray:
        """`wave` augmented with the random draws of `key` (e.g. (seed, epoch, clip)): the same key, the same clip."""
        with seeded(key):
            return self.chain(np.asarray(wave, np.float32), self.rate)
