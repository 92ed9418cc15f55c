"""Windows over audio and the one result type every classifier path returns.

`classify` (files) and `listen` (microphone) share :class:`WindowResult` and :func:`window_starts`,
so a window means the same thing everywhere: `window` seconds of audio, every `hop` seconds.
Scores come from :mod:`astedge.predict` (`activate`, `top_k`, `Score`), also numpy-only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from astedge.predict import Score


@dataclass
class WindowResult:
    """One classified window: where it lies in the audio, how long inference took, the top labels."""

    start: float
    end: float
    latency_ms: float
    top: list[Score] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of full windows; a clip shorter than one window gives one (padded) window at 0."""
    if num_samples <= window:
        return [0]
    return list(range(0, num_samples - window + 1, hop))
