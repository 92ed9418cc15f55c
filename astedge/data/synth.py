"""A deterministic procedural dataset of distinct sound classes, for the demo and the tests.

Each clip holds one event of its class (random frequency, gain, onset, duration and shape) over
background noise at a random SNR, so a model has to learn the class's time-frequency pattern, not
a fixed template. A long "stream" mixes classes at known times, with its ground truth, for the
runtime demo. Everything derives from one seed: the same arguments give the same bytes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astedge.errors import UserError

RATE = 16000
#: Rates a clip is "recorded" at before it is resampled to 16 kHz with astedge's resampler, as a file or a
#: microphone would be: real 16 kHz audio never carries full-band content up to 8 kHz.
CAPTURE_RATES = (16000, 22050, 44100, 48000)


def _time(n: int, rate: int) -> np.ndarray:
    return np.arange(n) / rate


def _tone(rng, n, rate):
    f = rng.uniform(300, 3000)
    return np.sin(2 * np.pi * f * _time(n, rate) + rng.uniform(0, 2 * np.pi))


def _sweep(rng, n, rate, up: bool):
    lo, hi = rng.uniform(200, 600), rng.uniform(2500, 6000)
    f0, f1 = (lo, hi) if up else (hi, lo)
    t = _time(n, rate)
    duration = max(t[-1], 1e-3)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))  # linear sweep f0 -> f1
    return np.sin(phase)


def _noise_burst(rng, n, rate):
    burst = rng.standard_normal(n)
    spectrum = np.fft.rfft(burst)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    centre, width = rng.uniform(800, 5000), rng.uniform(300, 1500)
    spectrum *= np.exp(-0.5 * ((freqs - centre) / width) ** 2)  # band-limited
    out = np.fft.irfft(spectrum, n)
    return out / (np.abs(out).max() + 1e-9)


def _clicks(rng, n, rate):
    out = np.zeros(n)
    period = int(rate / rng.uniform(6, 20))
    start = rng.integers(0, period)
    length = int(0.004 * rate)
    decay = np.exp(-np.arange(length) / (rng.uniform(4, 12) * rate / 16000))
    for i in range(start, n - length, period):
        out[i:i + length] += decay * rng.choice([-1.0, 1.0])
    return out


def _am_tone(rng, n, rate):
    t = _time(n, rate)
    return 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(4, 9) * t)) * _tone(rng, n, rate)  # 100% modulation depth


def _fm_tone(rng, n, rate):
    t = _time(n, rate)
    fc, rate, depth = rng.uniform(500, 2500), rng.uniform(4, 9), rng.uniform(0.08, 0.2)
    return np.sin(2 * np.pi * fc * t + depth * fc / rate * np.sin(2 * np.pi * rate * t))


def _harmonic_stack(rng, n, rate):
    t = _time(n, rate)
    f0 = rng.uniform(110, 400)
    harmonics = [k for k in range(1, rng.integers(5, 11)) if k * f0 < 7500]
    out = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) / k for k in harmonics)
    return out / np.abs(out).max()


def _beeps(rng, n, rate):
    period = int(rate * rng.uniform(0.12, 0.25))
    on = int(period * rng.uniform(0.35, 0.6))
    gate = (np.arange(n) % period) < on
    return _tone(rng, n, rate) * gate


def _hum(rng, n, rate):
    t = _time(n, rate)
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.98, 1.02)
    return sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) / k**0.5 for k in (1, 2, 3, 4, 5)) / 3


#: The classes, in label order. Each draws one event of `n` samples at `rate` Hz from its generator.
CLASSES = {
    "tone": _tone,
    "chirp_up": lambda rng, n, rate: _sweep(rng, n, rate, up=True),
    "chirp_down": lambda rng, n, rate: _sweep(rng, n, rate, up=False),
    "noise_burst": _noise_burst,
    "clicks": _clicks,
    "am_tone": _am_tone,
    "fm_tone": _fm_tone,
    "harmonic_stack": _harmonic_stack,
    "beeps": _beeps,
    "hum": _hum,
}


#: The label of clips that hold no event: a noise bed, sometimes with a distractor (a sound of none of the classes).
BACKGROUND = "background"


def _colored_noise(rng, n):
    """White, pink or brown noise (1/f^0, 1/f, 1/f^2 power), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    spectrum /= freqs ** (rng.choice([0.0, 0.5, 1.0]))
    out = np.fft.irfft(spectrum, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _distractor(rng, n, rate):
    """A sound that belongs to no class: low thumps, a rumble swell, or gusts of wind."""
    kind = rng.choice(["thumps", "rumble", "wind"])
    t = _time(n, rate)
    if kind == "thumps":
        out = np.zeros(n)
        length = int(rng.uniform(0.03, 0.08) * rate)
        pulse = np.sin(2 * np.pi * rng.uniform(40, 90) * _time(length, rate)) * np.exp(-np.arange(length) / (0.2 * length))
        for start in rng.integers(0, max(1, n - length), size=rng.integers(1, 4)):
            out[start:start + length] += pulse
        return out
    noise = _colored_noise(rng, n)
    if kind == "rumble":
        spectrum = np.fft.rfft(noise)
        spectrum[np.fft.rfftfreq(n, 1 / rate) > 150] = 0
        return np.fft.irfft(spectrum, n) * np.sin(np.pi * t / max(t[-1], 1e-3))
    return noise * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6.3))) ** 2


#: Levels (dBFS RMS) of the noise floor every clip and recording sits on, and of events above it (SNR, dB): wide
#: enough that a model learns the sounds, not one recording level (a quiet tone in a long recording is a tone too).
FLOOR_DB, SNR_DB = (-65.0, -30.0), (3.0, 30.0)


def background_clip(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One 16 kHz clip without an event: a colored noise floor, half the time with a distractor."""
    from astedge.audio.decode import resample

    rate = int(rng.choice(CAPTURE_RATES))
    n = int(round(seconds * rate))
    clip = _colored_noise(rng, n) * 10 ** (rng.uniform(*FLOOR_DB) / 20)
    if rng.random() < 0.5:
        distractor = _distractor(rng, n, rate)
        clip += distractor / (np.abs(distractor).max() + 1e-9) * 10 ** (rng.uniform(-35, -10) / 20)
    clip = resample(np.clip(clip, -1, 1).astype(np.float32), rate, RATE)
    return np.pad(clip, (0, max(0, int(round(seconds * RATE)) - len(clip))))[: int(round(seconds * RATE))]


def event_clip(label: str, seconds: float, rng: np.random.Generator,
               fill: tuple[float, float] = (0.4, 1.0)) -> tuple[np.ndarray, float, float]:
    """One 16 kHz clip: an event of `label` (a `fill` fraction of the clip, random onset, fades) `SNR_DB` above a
    colored noise floor at `FLOOR_DB`, made at a random capture rate and brought to 16 kHz by astedge's resampler,
    like real recordings; with the event's onset and offset in seconds (its strong label)."""
    from astedge.audio.decode import resample

    rate = int(rng.choice(CAPTURE_RATES))
    n = int(round(seconds * rate))
    length = int(n * rng.uniform(*fill))
    event = CLASSES[label](rng, length, rate).astype(np.float64)
    fade = min(int(0.01 * rate), length // 4)
    ramp = np.linspace(0, 1, fade)
    event[:fade] *= ramp
    event[length - fade:] *= ramp[::-1]
    floor = rng.uniform(*FLOOR_DB)
    event *= 10 ** ((floor + rng.uniform(*SNR_DB)) / 20) / (np.sqrt(np.mean(event**2)) + 1e-12)
    event *= min(1.0, 0.9 / (np.abs(event).max() + 1e-12))  # no clipping
    onset = rng.integers(0, n - length + 1)
    clip = _colored_noise(rng, n) * 10 ** (floor / 20)
    clip[onset:onset + length] += event
    clip = resample(np.clip(clip, -1, 1).astype(np.float32), rate, RATE)
    clip = np.pad(clip, (0, max(0, int(round(seconds * RATE)) - len(clip))))[: int(round(seconds * RATE))]
    return clip, onset / rate, (onset + length) / rate


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    classes: list[str]
    clips: int
    stream: Path
    stream_truth: Path


def check_classes(count: int) -> list[str]:
    if not 2 <= count <= len(CLASSES):
        raise UserError(f"--classes must be between 2 and {len(CLASSES)}, got {count}")
    return list(CLASSES)[:count]


def _render(job: tuple[str, int, int, float, int, str]) -> tuple[str, str, str, str]:
    """Write one clip (a worker process's unit of work) into `folder`; returns its strong-label row. Its randomness
    is its own ((seed, class, index)), so the bytes do not depend on the number of workers or their order."""
    import soundfile as sf

    label, class_index, index, seconds, seed, folder = job
    rng = np.random.default_rng((seed, class_index, index))
    name = f"{label}/{label}_{index:04d}.wav"
    if label == BACKGROUND:
        wave, row = background_clip(seconds, rng), (name, "", "", "")  # a clip known to hold no event
    else:
        wave, onset, offset = event_clip(label, seconds, rng)
        row = (name, f"{onset:.3f}", f"{offset:.3f}", label)
    sf.write(Path(folder) / name, wave, RATE, format="WAV", subtype="PCM_16")
    return row


def write_dataset(out: str | Path, classes: int = 10, per_class: int = 60, seconds: float = 1.0, seed: int = 0,
                  stream_seconds: float = 60.0, stream_rate: int = 44100, progress=None, background: bool = False,
                  workers: int | None = None, force: bool = False) -> SynthSummary:
    """Write `out/<class>/<class>_<i>.wav` (16 kHz PCM16), `out/strong.tsv` (every clip's event: DCASE's strong
    labels) and a labelled recording `out/stream.wav` + `out/stream.csv` (:func:`write_event_stream`: the truth
    ``astedge evaluate`` takes).

    With `background`, a `background` class of clips without an event (see :func:`background_clip`) too: what a
    model needs to say "nothing" between events. Clips are made by `workers` processes (default: one per CPU) into
    a folder beside `out` that takes its place once everything is written and synced to disk (one sync, not one
    per file); `out` may exist empty, or with `force`.
    """
    import os
    from concurrent.futures import ProcessPoolExecutor

    from astedge.artefact import staged_folder

    names = check_classes(classes)
    if per_class < 1 or seconds < 0.1:
        raise UserError("--per-class must be >= 1 and --seconds >= 0.1")
    root = Path(out)
    empty = root.is_dir() and not any(root.iterdir())
    labels = names + ([BACKGROUND] if background else [])
    jobs = [(label, k, index, seconds, seed) for index in range(per_class) for k, label in enumerate(labels)]
    with staged_folder(root, force=force or empty) as tmp:
        for label in labels:
            (tmp / label).mkdir()
        work = [job + (str(tmp),) for job in jobs]
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            rows = []
            for row in pool.map(_render, work, chunksize=max(1, len(work) // (8 * (workers or os.cpu_count() or 1)))):
                rows.append(row)
                if progress:
                    progress(1, len(jobs))
        (tmp / "strong.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                        + "".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
        write_event_stream(tmp / "stream", seconds=stream_seconds, rate=stream_rate, seed=seed, classes=names)
        os.sync()
    return SynthSummary(root, labels, len(jobs), root / "stream.wav", root / "stream.csv")


#: Longest single sound in a long event: the clips' length. A class's sound is defined at this scale (a
#: chirp sweeps within about a second); a 5 s event of it is several, back to back.
EVENT_UNIT_SECONDS = 1.0


def _long_event(label: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of `label`: one sound when it fits in :data:`EVENT_UNIT_SECONDS`, else equal parts of at most that."""
    parts = max(1, int(np.ceil(n / (EVENT_UNIT_SECONDS * rate))))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return np.concatenate([CLASSES[label](rng, int(b - a), rate) for a, b in zip(bounds[:-1], bounds[1:])]).astype(
        np.float64)


def write_event_stream(out: str | Path, seconds: float = 300.0, rate: int = 48000, seed: int = 0,
                       classes: list[str] | None = None, durations: tuple[float, float] = (0.3, 5.0),
                       gaps: tuple[float, float] = (0.5, 3.0)) -> tuple[Path, Path]:
    """A long recording for event detection: events of the classes (0.3-5 s, log-uniform) at SNR 5-30 dB over a
    continuous noise bed, separated by 0.5-3 s gaps of which half hold a distractor; made at `rate` (44.1 or
    48 kHz, as a recorder would). An event longer than a clip is a run of the class's clip-scale sounds
    (:func:`_long_event`), as a long bark is barks. Writes `out.wav` (PCM16) and `out.csv` (onset,offset,label).
    Returns both paths."""
    import soundfile as sf

    from astedge.files import atomic_write

    names = classes or list(CLASSES)
    rng = np.random.default_rng((seed, 2))
    total = int(seconds * rate)
    wave = _colored_noise(rng, total) * 10 ** (-50 / 20)
    bed_rms = 10 ** (-50 / 20)
    rows, t = [], rng.uniform(*gaps)
    while True:
        length = float(np.exp(rng.uniform(np.log(durations[0]), np.log(durations[1]))))
        if t + length + gaps[0] > seconds:
            break
        start, n = int(t * rate), int(length * rate)
        label = names[int(rng.integers(len(names)))]
        event = _long_event(label, n, rate, rng)
        fade = min(int(0.01 * rate), n // 4)
        ramp = np.linspace(0, 1, fade)
        event[:fade] *= ramp
        event[n - fade:] *= ramp[::-1]
        event *= bed_rms * 10 ** (rng.uniform(5, 30) / 20) / (np.sqrt(np.mean(event**2)) + 1e-12)
        wave[start:start + n] += event
        rows.append((start / rate, (start + n) / rate, label))
        gap = rng.uniform(*gaps)
        if rng.random() < 0.5 and gap > 0.4:  # a distractor inside the gap, away from the events
            d_start = start + n + int(0.1 * rate)
            d_len = min(int((gap - 0.2) * rate), total - d_start)  # the last gap may run past the recording's end
            distractor = _distractor(rng, d_len, rate)
            wave[d_start:d_start + d_len] += distractor / (np.abs(distractor).max() + 1e-9) * 10 ** (
                rng.uniform(-35, -15) / 20)
        t += length + gap
    out = Path(out)
    wav, csv_path = out.with_suffix(".wav"), out.with_suffix(".csv")
    with atomic_write(wav) as handle:
        sf.write(handle, np.clip(wave, -1, 1).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    with atomic_write(csv_path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["onset", "offset", "label"])
        writer.writerows((f"{a:.3f}", f"{b:.3f}", label) for a, b, label in rows)
    return wav, csv_path
