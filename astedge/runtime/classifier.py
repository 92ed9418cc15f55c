"""The runtime as one object: :class:`ClassifierOptions` say how to classify, a :class:`Classifier` does it.

Modelled on MediaPipe's ``AudioClassifierOptions`` + ``AudioClassifier.create_from_options``: one frozen options
object with documented fields, one constructor (:meth:`Classifier.from_options`), and one result type for files
and streams (:class:`~astedge.runtime.windows.WindowResult`; :class:`~astedge.runtime.windows.FileResult` adds a
file's mean and max). The Classifier owns what every caller used to wire by hand: the backend choice
(:func:`~astedge.runtime.backends.choose_backend`), the default hop, the feature extractor
(:func:`~astedge.features.cuda_fbank.extractor_for`), the label mask, the smoother and its lag, and the decision
layer with the export's calibrated thresholds as its default. No torch here.

    with Classifier.from_options("ast-audioset/", ClassifierOptions(hop=0.5, events=True)) as classifier:
        result = classifier.classify_file("street.wav")            # FileResult: windows, mean, max, events
        with classifier.listen(capture.MicrophoneSource()) as listener:
            for window in listener.results(): ...                  # WindowResult, as each window is ready
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from astedge.errors import UserError
from astedge.runtime import model_path
from astedge.runtime.backends import RunsAudio, choose_backend
from astedge.runtime.events import EventConfig, EventDetector, check_thresholds, parse_confirm, read_thresholds
from astedge.runtime.frames import FramePath, frame_activation
from astedge.runtime.scores import Smoother, check_label_filters, label_mask
from astedge.runtime.stream import Listener, check_partial
from astedge.runtime.windows import Decision, FileResult, WindowResult, Windowing, classify_windows, clip_scores

#: Seconds between a stream's windows when neither the options nor the export's device profile say otherwise.
DEFAULT_STREAM_HOP = 1.0
#: A frame head's windows (files and streams): every this many frame steps (0.32 s at 80 ms frames), and frames final
#: this many steps behind the newest audio (one hop: each frame averaged over one more window; on two unseen
#: `data events` recordings event F1 0.78/0.71 -> 0.84/0.74 for 0.15 s more latency than at 2 steps); the median
#: filter's length in frames when the model carries none.
FRAME_HOP_STEPS, FRAME_DELAY_STEPS, FRAME_MEDIAN = 4, 4, 5


@dataclass(frozen=True)
class ClassifierOptions:
    """How to classify. The defaults are the CLI's; construction checks what can be checked without the model (a
    UserError names the option); labels and the window against the model's input are checked by :class:`Classifier`.
    """

    backend: str = "auto"  # a backend or alias of astedge.runtime.backends; auto: the first of its list that loads
    precision: str = "auto"  # auto, fp32, fp16 or int8 (checked when the backend is chosen)
    threads: int | None = None  # ONNX Runtime's intra-op threads (None: its default)
    window: float | None = None  # seconds per window (None: the model's, e.g. 10 s for AudioSet models)
    hop: float | None = None  # seconds between windows (None: half the window for files, the stream hop for streams)
    batch_size: int = 8  # windows per backend call (files)
    max_seconds: float | None = 3600.0  # longer files are refused (None: any length)
    partial: str = "wait"  # streams, before the first full window: wait, or pad (classify the growing window)
    duration: float | None = None  # streams stop after this many seconds of audio (None: when the source ends)
    top_k: int = 5  # classes reported per window
    threshold: float | None = None  # windows report only scores >= this (None: the top_k whatever their score)
    allow: tuple[str, ...] = ()  # only these labels are reported and can be events (names; "A,B" splits at commas)
    deny: tuple[str, ...] = ()  # these labels never are (excludes `allow`)
    smoothing: str = "none"  # scores across windows: none, ema, median or max
    smoothing_windows: int = 3  # ema: alpha = 2 / (N + 1); median, max: over the last N windows
    events: bool = False  # run the decision layer: windows become sound events with onsets and offsets
    event_threshold: float = 0.5  # events: the on-threshold of classes without their own
    thresholds: Mapping[str, float] | str | Path | None = None  # per-class on-thresholds, or astedge calibrate's
    #                                                             JSON file (None: those exported with the model)
    off_ratio: float = 0.8  # hysteresis: an event ends below its on-threshold x this
    confirm: str | tuple[int, int] | None = None  # "N/M" or (N, M): on in N of the last M windows starts an event
    min_duration: float | None = None  # seconds an event must last before it is reported (None: the model's, else 0)
    merge_gap: float | None = None  # seconds of silence that still continue an event (None: the model's, else 0)
    trim: float = 0.0  # seconds each onset moves later and each offset earlier
    median: int | None = None  # frame heads: median filter length in frames (None: the model's calibrated one)
    frame_delay: float | None = None  # frame heads: seconds a frame waits for later windows before it is final
    background: str | None = None  # the label that means "nothing" and is never an event (None: the model's)

    def __post_init__(self):
        object.__setattr__(self, "allow", tuple(self.allow))
        object.__setattr__(self, "deny", tuple(self.deny))
        if self.top_k < 1:
            raise UserError("--top-k must be >= 1")
        if self.batch_size < 1:
            raise UserError("--batch-size must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be >= 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise UserError("--max-seconds must be > 0")
        if self.duration is not None and not self.duration > 0:
            raise UserError("--duration must be > 0")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:  # events: EventConfig checks theirs
            raise UserError(f"--threshold must be in [0, 1], got {self.threshold:g} (scores are probabilities)")
        check_label_filters(self.allow, self.deny)
        check_partial(self.partial)
        self.smoother()  # an unknown method or a window count below 1
        if self.events:
            self.event_config()  # thresholds, ratios, N/M and durations
        if self.median is not None and (self.median < 1 or self.median % 2 == 0):
            raise UserError(f"--median must be an odd number of frames >= 1, got {self.median}")
        if self.frame_delay is not None and not self.frame_delay >= 0:
            raise UserError(f"--frame-delay must be >= 0 seconds, got {self.frame_delay}")

    def smoother(self) -> Smoother:
        """A fresh smoother (its state is one file's or stream's)."""
        return Smoother(self.smoothing, self.smoothing_windows)

    def event_config(self, thresholds: Mapping[str, float] | None = None, min_duration: float | None = None,
                     merge_gap: float | None = None) -> EventConfig:
        """The decision layer's settings, with per-class `thresholds` (checked against the model's labels) and the
        model's `min_duration` and `merge_gap` where the options give none."""
        n, m = self.confirm if isinstance(self.confirm, tuple) else parse_confirm(self.confirm)
        duration = self.min_duration if self.min_duration is not None else (min_duration or 0.0)
        gap = self.merge_gap if self.merge_gap is not None else (merge_gap or 0.0)
        return EventConfig(threshold=self.event_threshold, off_ratio=self.off_ratio, thresholds=dict(thresholds or {}),
                           confirm=n, confirm_window=m, min_duration=duration, merge_gap=gap, trim=self.trim)


class Classifier:
    """A model on a backend, classifying files (:meth:`classify_file`) and streams (:meth:`listen`) as its
    :class:`ClassifierOptions` say. Build it with :meth:`from_options` (which chooses the backend), or around a
    loaded backend; `model` (the model path) supplies the export's stream hop and calibrated thresholds.
    Close it (or use ``with``) to release the backend.
    """

    def __init__(self, backend, options: ClassifierOptions | None = None, *, model: str | Path | None = None):
        self.backend, self.options, self.model = backend, options or ClassifierOptions(), model
        self.labels: tuple[str, ...] = tuple(backend.labels)
        self.mask = label_mask(self.labels, list(self.options.allow), list(self.options.deny))
        self.defaults = model_path.decision_defaults(model) if model is not None else {}
        self.background = self._background()
        self.frame_layout = backend.frame_layout if self.options.events else None  # events from frames
        self.stream_hop = (model_path.stream_hop(model) if model is not None else None) or DEFAULT_STREAM_HOP
        self._windowing = {stream: self._make_windowing(stream) for stream in (False, True)}
        o = self.options
        self.event_config = (o.event_config(self._thresholds(), self.defaults.get("min_duration"),
                                            self.defaults.get("merge_gap")) if o.events else None)
        self._extractor = None

    def _background(self) -> str | None:
        """The label that means "nothing": the options', else the model's; never an event."""
        name = self.options.background if self.options.background is not None else self.defaults.get("background")
        if name is not None and name not in self.labels:
            raise UserError(f"--background-class {name!r} is not a label of this model")
        return name

    def _make_windowing(self, stream: bool) -> Windowing:
        """The one choice of default hop: a frame head's frame hop when events come from frames, else half the
        window for files and the stream hop for streams. A frame head's hop must keep windows on its frame grid."""
        config, o, layout = self.backend.feature_config, self.options, self.frame_layout
        if layout is None:
            return Windowing.from_seconds(config, o.window, o.hop, default_hop=self.stream_hop if stream else None)
        size = Windowing.from_seconds(config, o.window).window
        steps = max(1, min(FRAME_HOP_STEPS, size // layout.step))  # windows on the frame grid, within the window
        windowing = Windowing.from_seconds(config, o.window, o.hop, default_hop=steps * layout.step / layout.sample_rate)
        if windowing.hop % layout.step:
            raise UserError(f"--hop {windowing.seconds[1]:g} s is not a multiple of this model's frame step "
                            f"({layout.step / layout.sample_rate:g} s): frame scores of overlapping windows are averaged "
                            "frame by frame")
        return windowing

    @classmethod
    def from_options(cls, model: str | Path, options: ClassifierOptions | None = None, *,
                     log: Callable[[str], None] | None = None) -> "Classifier":
        """The classifier of a model path (export folder, astedge.json, .onnx, .safetensors) on the backend the
        options ask for; `log` hears which backend runs and why the ones tried before it did not."""
        options = options or ClassifierOptions()
        choice = choose_backend(model, options.backend, options.precision, options.threads)
        if log is not None:
            log(f"{model}: {choice.describe()}")
        try:
            return cls(choice.backend, options, model=model)
        except BaseException:
            choice.backend.close()
            raise

    def replace(self, **changes) -> "Classifier":
        """Another classifier on the same (shared) backend with some options changed: close only one of them."""
        return Classifier(self.backend, dataclasses.replace(self.options, **changes), model=self.model)

    def _thresholds(self) -> dict[str, float] | None:
        given = self.options.thresholds
        if given is None:
            return self.defaults.get("thresholds") or None
        if isinstance(given, Mapping):
            return check_thresholds(dict(given), self.labels)
        return read_thresholds(given, self.labels)

    def windowing(self, stream: bool = False) -> Windowing:
        """The windows of a file (`stream` False) or of a stream, as a live run makes them."""
        return self._windowing[stream]

    @property
    def extractor(self):
        """The feature extractor beside this backend: the CUDA fbank next to a GPU backend when it loads here, else
        the numpy reference (raw log-mel frames; windows are cut and normalized from them)."""
        if self._extractor is None:
            from astedge.features.cuda_fbank import extractor_for

            self._extractor = extractor_for(self.backend.device, self.backend.feature_config, model_input=False)
        return self._extractor

    def _host_extractor(self):
        """The extractor host features need, None when the backend computes features on its device."""
        return None if isinstance(self.backend, RunsAudio) else self.extractor

    def decision(self, windowing: Windowing, file: str | None = None) -> Decision:
        """What each window's logits become, fresh for one file or stream: probabilities, the smoother, the reported
        top-k, and the decision layer (with :attr:`ClassifierOptions.events`), its timestamps moved back by the
        smoother's lags (at onsets and at offsets)."""
        o, smoother = self.options, self.options.smoother()
        if self.event_config is None:
            return Decision(self.labels, self.backend.task, o.top_k, o.threshold, self.mask, smoother)
        mask = self.event_mask()
        if self.frame_layout is not None:
            return Decision(self.labels, self.backend.task, o.top_k, o.threshold, self.mask, smoother,
                            frames=self._frame_path(mask, file))
        detector = EventDetector(self.labels, self.backend.task, self.event_config, mask, file=file,
                                 lag=tuple(lag * windowing.seconds[1] for lag in smoother.lags))
        return Decision(self.labels, self.backend.task, o.top_k, o.threshold, self.mask, smoother, detector)

    def event_mask(self) -> np.ndarray | None:
        """The classes that may become events: the reported ones, never the background class."""
        if self.background is None:
            return self.mask
        mask = np.ones(len(self.labels), bool) if self.mask is None else self.mask.copy()
        mask[self.labels.index(self.background)] = False
        return mask

    def _frame_path(self, mask: np.ndarray | None, file: str | None) -> FramePath:
        """Frames to events (:class:`~astedge.runtime.frames.FramePath`): the model's calibrated median filter and
        the frame delay unless the options say otherwise; a single-label model's frames one event at a time, as its
        windows."""
        layout, o = self.frame_layout, self.options
        step = layout.step / layout.sample_rate
        detector = EventDetector(self.labels, self.backend.task, self.event_config, mask, file=file, widen=step / 2)
        median = o.median if o.median is not None else int(self.defaults.get("median_frames") or FRAME_MEDIAN)
        delay = o.frame_delay if o.frame_delay is not None else FRAME_DELAY_STEPS * step
        return FramePath(layout, detector, median=median, delay=delay,
                         activation=frame_activation(self.backend.task, self.background))

    def classify_file(self, path: str | Path, *, stream: bool = False,
                      on_window: Callable[[WindowResult], None] | None = None,
                      decision: Decision | None = None) -> FileResult:
        """Classify an audio file (any format soundfile reads, any rate and channel count) in sliding windows;
        `on_window` hears each window's result as soon as it is ready. `stream`: with the stream's windows
        (what a live run would decide: ``astedge evaluate``)."""
        from astedge.audio.decode import load_audio

        wave = load_audio(path, self.backend.feature_config.sample_rate, max_seconds=self.options.max_seconds)
        return self.classify_waveform(wave, name=str(path), stream=stream, on_window=on_window, decision=decision)

    def classify_waveform(self, wave: np.ndarray, *, name: str | None = None, stream: bool = False,
                          on_window: Callable[[WindowResult], None] | None = None,
                          decision: Decision | None = None) -> FileResult:
        """:meth:`classify_file` of mono audio at the model's rate: each window's outputs go through `decision`
        (default: :meth:`decision`'s, the frame path when events come from a frame head)."""
        windowing = self.windowing(stream)
        return classify_windows(self.backend, wave, windowing, decision or self.decision(windowing, name),
                                batch_size=self.options.batch_size, extractor=self._host_extractor(), name=name,
                                on_window=on_window)

    def clip_scores(self, waves, *, batch_size: int = 16) -> np.ndarray:
        """Clip-level probabilities ``[clips, classes]`` of mono clips at the model's rate: the maximum over each
        clip's file windows (what calibration and accuracy on labelled clips use)."""
        return clip_scores(self.backend, waves, self.windowing(), batch_size=batch_size,
                           extractor=self._host_extractor())

    def listen(self, source) -> Listener:
        """A :class:`~astedge.runtime.stream.Listener` over `source` (:mod:`astedge.audio.capture`) with the stream's
        windows: start it (or ``with``), then its ``results()`` yields each WindowResult as it is ready, then its
        ``summary()`` and ``finish_events()``."""
        windowing = self.windowing(stream=True)
        return Listener(self.backend, source, windowing, decision=self.decision(windowing),
                        partial=self.options.partial, duration=self.options.duration,
                        extractor=None if windowing.incremental else self.extractor)

    def close(self) -> None:
        """Release the backend and the extractor (device memory, sessions)."""
        try:
            self.backend.close()
        finally:
            if self._extractor is not None:
                self._extractor.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_classifier(runner) -> Classifier:
    """`runner` itself when it is a Classifier, else a Classifier with the default options around a loaded backend
    (what library callers that hold a backend pass)."""
    return runner if isinstance(runner, Classifier) else Classifier(runner)
