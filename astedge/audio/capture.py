"""Audio sources for :class:`astedge.runtime.stream.Listener`: a microphone, a replayed file, raw PCM on stdin.

Every source delivers audio the way PortAudio does, through one callback with sounddevice's
signature, ``callback(indata [frames, channels] float32, frames, time_info, status)``, and calls
``finished()`` when it has no more audio. So a file replayed at real-time pace exercises exactly
the microphone's path (mixing, resampling, the ring, overflow accounting) without a sound card.

A source has ``rate`` and ``channels`` (what it delivers), ``live`` (True: it runs at its own pace and
never waits for inference, like a microphone; False: it is read as fast as inference consumes it,
losslessly) and ``name``; ``start(callback, finished)`` and ``stop()``.

Microphones open at the model's rate when the device offers it, else at the device's native rate
(USB microphones on Jetson often offer only 44.1 or 48 kHz; PortAudio then fails with "Invalid sample
rate") and the listener resamples with a streaming soxr resampler.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astedge.audio.c_stderr import quiet_c_stderr
from astedge.errors import UserError

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
PORTAUDIO_HINT = ("sounddevice needs the PortAudio library: sudo apt install libportaudio2 (and pip install "
                  "'astedge[mic]'); without a microphone use --source FILE --realtime or --source - (raw PCM on stdin)")


@dataclass
class Flags:
    """Status flags for sources other than PortAudio, with the attribute names of sounddevice.CallbackFlags."""

    input_overflow: bool = False
    input_underflow: bool = False

    def __bool__(self) -> bool:
        return self.input_overflow or self.input_underflow


class _ThreadSource:
    """A source that feeds the callback from its own thread."""

    name = "?"
    live = False

    def __init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, callback, finished) -> None:
        self._thread = threading.Thread(target=self._pump, args=(callback, finished), name="astedge-source",
                                        daemon=True)
        self._thread.start()

    def _pump(self, callback, finished) -> None:
        try:
            self._feed(callback)
        finally:
            finished()

    def _feed(self, callback) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class FileSource(_ThreadSource):
    """An audio file at its own rate and channels, in blocks; `realtime` paces it at `speed` x real time."""

    def __init__(self, path: str | Path, realtime: bool = False, speed: float = 1.0, block_seconds: float = 0.05):
        super().__init__()
        from astedge.audio.decode import audio_info

        info = audio_info(path)  # UserError for missing, empty, unreadable files
        if speed <= 0:
            raise UserError("--speed must be > 0")
        self.path = Path(path)
        self.rate, self.channels = int(info.samplerate), int(info.channels)
        self.live, self.speed = realtime, speed
        self.block = max(1, int(round(block_seconds * self.rate)))
        self.name = str(path) + (f" (real time x{speed:g})" if realtime else "")

    def _feed(self, callback) -> None:
        import soundfile as sf

        started, done = time.perf_counter(), 0
        with quiet_c_stderr():  # libmpg123's notes on a damaged MP3 stay off the terminal, block by block
            handle = sf.SoundFile(str(self.path))
        with handle:
            while not self._stop.is_set():
                with quiet_c_stderr():
                    block = handle.read(self.block, dtype="float32", always_2d=True)
                if not len(block):
                    break
                if self.live:  # deliver each block when its last sample would have been recorded
                    delay = started + (done + len(block)) / (self.rate * self.speed) - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                callback(block, len(block), None, Flags())
                done += len(block)


class PcmSource(_ThreadSource):
    """Raw interleaved PCM from a binary stream (stdin): s16le or f32le at a given rate and channel count.

    `live` says the producer runs in real time (``arecord ... | astedge listen --source - --realtime``):
    windows are then dropped rather than the pipe stalling when inference falls behind.
    """

    def __init__(self, stream=None, rate: int = 16000, channels: int = 1, fmt: str = "s16le", live: bool = False,
                 block_seconds: float = 0.05):
        super().__init__()
        if fmt not in PCM_FORMATS:
            raise UserError(f"--format must be one of {', '.join(PCM_FORMATS)}, got {fmt!r}")
        if rate < 1 or channels < 1:
            raise UserError("--rate and --channels must be >= 1")
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.rate, self.channels, self.live = int(rate), int(channels), live
        self.dtype = PCM_FORMATS[fmt]
        self.frame_bytes = self.dtype.itemsize * self.channels
        self.block_bytes = max(1, int(round(block_seconds * rate))) * self.frame_bytes
        self.name = f"stdin ({fmt}, {rate} Hz, {channels} ch)"

    def _feed(self, callback) -> None:
        pending = b""
        reader = getattr(self.stream, "read1", self.stream.read)  # read1: return what is there, do not wait to fill
        while not self._stop.is_set():
            data = reader(self.block_bytes)
            if not data:
                break
            pending += data
            usable = len(pending) // self.frame_bytes * self.frame_bytes
            if not usable:
                continue
            samples = np.frombuffer(pending[:usable], self.dtype).reshape(-1, self.channels)
            pending = pending[usable:]
            if self.dtype.kind == "i":
                block = samples.astype(np.float32) / np.float32(32768.0)
            else:
                block = samples.astype(np.float32)
            callback(block, len(block), None, Flags())

    def stop(self) -> None:
        self._stop.set()  # no join: the thread may sit in a blocking read of the pipe (it is a daemon)


def import_sounddevice():
    try:
        import sounddevice
    except ImportError as err:
        raise UserError(f"sounddevice is not installed ({err}); {PORTAUDIO_HINT}") from None
    except OSError as err:  # sounddevice imports, but libportaudio is missing
        raise UserError(f"PortAudio is not available ({err}); {PORTAUDIO_HINT}") from None
    return sounddevice


def find_input_device(sd, device: str | int | None) -> int:
    """An input device index from None (the default), an index, or a case-insensitive part of its name."""
    try:
        devices = list(sd.query_devices())
    except Exception as err:  # noqa: BLE001 - host API failures come in several types
        raise UserError(f"cannot list audio devices ({err})") from None
    inputs = [d for d in devices if d["max_input_channels"] > 0]
    if not inputs:
        raise UserError("no microphone found (PortAudio lists no input devices); see `astedge doctor`, or use "
                        "--source FILE --realtime")
    listing = "; ".join(f"{d['index']}: {d['name']}" for d in inputs)
    if device is None or device == "":
        try:
            return int(sd.query_devices(kind="input")["index"])
        except Exception:  # noqa: BLE001 - no default input: take the first one
            return inputs[0]["index"]
    text = str(device).strip()
    if text.isdigit():
        index = int(text)
        if not any(d["index"] == index for d in inputs):
            raise UserError(f"no input device {index}; inputs are {listing}")
        return index
    hits = [d for d in inputs if text.casefold() in d["name"].casefold()]
    if not hits:
        raise UserError(f"no input device matches {text!r}; inputs are {listing}")
    if len(hits) > 1 and not any(d["name"].casefold() == text.casefold() for d in hits):
        raise UserError(f"{text!r} matches several input devices ({'; '.join(d['name'] for d in hits)}); be more "
                        "specific or give the index")
    exact = [d for d in hits if d["name"].casefold() == text.casefold()]
    return (exact or hits)[0]["index"]


class MicrophoneSource:
    """A PortAudio input stream; its callback (PortAudio's thread) only mixes, resamples and writes the ring."""

    live = True

    def __init__(self, device: str | int | None = None, rate: int = 16000, latency: str | float = "high"):
        sd = import_sounddevice()
        self.sd = sd
        self.device = find_input_device(sd, device)
        info = sd.query_devices(self.device, "input")
        self.channels = 1
        try:
            sd.check_input_settings(device=self.device, channels=1, dtype="float32")
        except Exception:  # noqa: BLE001 - some hw: devices only open with all their channels
            self.channels = int(info["max_input_channels"])
        self.rate = self._pick_rate(int(rate), int(round(info["default_samplerate"])))
        self.latency = latency
        self.name = f"microphone {self.device}: {info['name']} ({self.rate} Hz, {self.channels} ch)"
        self.stream = None

    def _pick_rate(self, wanted: int, native: int) -> int:
        """The model's rate if the device opens at it, else its native rate (resampled in software)."""
        for rate in dict.fromkeys((wanted, native, 48000, 44100)):
            try:
                self.sd.check_input_settings(device=self.device, channels=self.channels, dtype="float32",
                                             samplerate=rate)
                return rate
            except Exception:  # noqa: BLE001 - PortAudioError "Invalid sample rate" and friends
                continue
        raise UserError(f"input device {self.device} opens at none of {wanted}, {native}, 48000, 44100 Hz")

    def start(self, callback, finished) -> None:
        try:
            self.stream = self.sd.InputStream(device=self.device, channels=self.channels, samplerate=self.rate,
                                              dtype="float32", blocksize=0, latency=self.latency, callback=callback,
                                              finished_callback=finished)
            self.stream.start()
        except Exception as err:  # noqa: BLE001 - PortAudioError
            raise UserError(f"cannot open {self.name}: {err}") from None

    def stop(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.stop()
            stream.close()
