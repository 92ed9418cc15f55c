"""The procedural data: strong labels that match the audio, event recordings that always complete."""

import numpy as np
import pytest
import soundfile as sf

from astedge.data import synth
from astedge.data.datasets import read_dataset
from astedge.data.event_table import read_events_csv


def _level_db(wave: np.ndarray, rate: int, start: float, end: float) -> float:
    return 10 * np.log10(np.mean(wave[int(start * rate):int(end * rate)] ** 2) + 1e-12)


def test_synth_writes_the_strong_labels_of_every_clip(tmp_path):
    summary = synth.write_dataset(tmp_path, classes=3, per_class=6, seconds=1.0, seed=4, stream_seconds=10.0,
                                  background=True)
    table = read_events_csv(tmp_path / "strong.tsv", by_file=True)
    assert len(table) == summary.clips  # every clip, background ones listed without events
    assert all(table[f"background/background_{i:04d}.wav"] == [] for i in range(6))
    checked = 0
    for name, events in table.items():
        if not events:
            continue
        (event,) = events
        assert event.label == name.split("/")[0] and 0 <= event.onset < event.offset <= 1.0
        wave, rate = sf.read(tmp_path / name)
        inside = _level_db(wave, rate, event.onset + 0.01, event.offset - 0.01)
        for start, end in ((0.0, event.onset - 0.01), (event.offset + 0.01, 1.0)):  # the noise around the event
            if end - start >= 0.05:
                assert inside - _level_db(wave, rate, start, end) >= 4.0, (name, event, start, end)
                checked += 1
    assert checked >= 6
    data = read_dataset(tmp_path)
    assert data.strong == summary.clips and data.background == synth.BACKGROUND
    item = next(i for items in data.splits.values() for i in items if i.path.name == "tone_0000.wav")
    (onset, offset, label), = item.events
    assert data.labels[label] == "tone" and (onset, offset) == (table["tone/tone_0000.wav"][0].onset,
                                                               table["tone/tone_0000.wav"][0].offset)


@pytest.mark.parametrize("seed", [8, 14, 26])  # seeds whose last gap's distractor ran past the end (a crash)
def test_event_recordings_complete_for_any_seed(tmp_path, seed):
    wav, truth = synth.write_event_stream(tmp_path / "rec", seconds=30.0, rate=16000, seed=seed)
    info = sf.info(wav)
    events = read_events_csv(truth)
    assert info.duration == pytest.approx(30.0) and events
    assert all(0 < e.onset < e.offset <= 30.0 for e in events)
    assert all(a.offset < b.onset for a, b in zip(events, events[1:]))
