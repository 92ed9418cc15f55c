"""Waveform augmentation: each step changes the audio as asked (measured on the signals), it is off wherever a
model is scored or exported, and a seed makes it (and a training run) repeat bit for bit."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from astedge.data import synth
from astedge.data.datasets import read_dataset
from astedge.features import fbank as F
from astedge.train.augment import Augmenter, WaveAugment
from astedge.train.clips import ClipDataset
from astedge.train.recipes import load_recipe
from conftest import run_without_torch, tone

RATE = 16000
STEPS = ("speed_p", "pitch_p", "shift_p", "reverb_p", "band_p", "noise_p", "gain_p")
TINY = dict(model="tiny", depth=1, epochs=1, batch_size=8, fstride=16, tstride=16, warmup_steps=0, mixup=0.0,
            wa_start=0, wa_end=0)


def only(**values) -> WaveAugment:
    """Every clip augmented, by the given steps alone."""
    return WaveAugment(p=1.0, **{**{k: 0.0 for k in STEPS}, **values})


def augment(spec: WaveAugment, wave: np.ndarray, key=(0, 1, 2), seed: int = 0) -> np.ndarray:
    return Augmenter(spec, RATE, seed)(wave, key)


def db(x: float) -> float:
    return 10 * np.log10(x)


def band_energy(wave: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / RATE)
    return float(power[(freqs >= low) & (freqs < high)].sum())


def peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave)), n=1 << 18))
    return float(np.argmax(spectrum) * RATE / (1 << 18))


def edc_db(wave: np.ndarray) -> np.ndarray:
    """Schroeder's energy decay curve in dB (the test's own, beside pyroomacoustics' measure_rt60)."""
    energy = np.cumsum(wave.astype(np.float64)[::-1] ** 2)[::-1]
    return 10 * np.log10(energy / energy[0] + 1e-30)


@pytest.fixture(scope="module")
def speech_like() -> np.ndarray:
    """1 s: silence, a two-tone 'word' with an envelope, silence (the SNR counts the whole clip)."""
    x = np.zeros(RATE, np.float32)
    word = tone(300, 0.4) + 0.5 * tone(1200, 0.4)
    x[4000:4000 + len(word)] = word * np.hanning(len(word)).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def white() -> np.ndarray:
    return (0.1 * np.random.default_rng(7).standard_normal(2 * RATE)).astype(np.float32)


# --- noise -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
@pytest.mark.parametrize("slope", [-6.0, 3.0])
def test_coloured_noise_is_mixed_at_the_asked_snr_and_slope(speech_like, snr, slope):
    noisy = augment(only(noise_p=1.0, snr_db=(snr, snr), noise_slope=(slope, slope)), speech_like)
    noise = noisy.astype(np.float64) - speech_like
    measured = db(np.sum(speech_like.astype(np.float64) ** 2) / np.sum(noise**2))
    assert measured == pytest.approx(snr, abs=0.5)
    # the colour: power per hertz 3 octaves apart (0.5-1 kHz vs 4-8 kHz) differs by ~3 x the slope
    tilt = db(band_energy(noise, 4000, 8000) / 4000) - db(band_energy(noise, 500, 1000) / 500)
    assert tilt == pytest.approx(3 * slope, abs=3.0)


def test_recorded_noise_is_looped_and_mixed_at_the_asked_snr(tmp_path, speech_like):
    recording = 0.3 * np.sin(2 * np.pi * 97 * np.arange(2400) / 8000) + 0.05 * np.random.default_rng(1).standard_normal(2400)
    (tmp_path / "noise").mkdir()
    sf.write(tmp_path / "noise" / "hum.wav", recording.astype(np.float32), 8000, subtype="FLOAT")  # 0.3 s at 8 kHz
    for snr in (3.0, 18.0):
        noisy = augment(only(noise_p=1.0, snr_db=(snr, snr), noise_dir=str(tmp_path / "noise")), speech_like)
        noise = noisy.astype(np.float64) - speech_like
        assert db(np.sum(speech_like.astype(np.float64) ** 2) / np.sum(noise**2)) == pytest.approx(snr, abs=0.5)
        assert peak_hz(noise) == pytest.approx(97, abs=1.0)  # the recording, resampled to 16 kHz, all clip long
        assert np.abs(noise[:4000]).max() > 0.5 * np.abs(noise).max()  # looped over the clip, not only its start


# --- rooms ------------------------------------------------------------------------------------------

def test_synthesized_rooms_decay_at_the_asked_reverberation_time():
    import pyroomacoustics as pra

    from astedge.train.rooms import synthesize_rooms

    bank = synthesize_rooms(3, (0.25, 0.8), RATE, seed=1)
    assert len(set(round(t, 3) for t in bank.rt60)) == 3
    for response, rt60 in zip(bank.responses, bank.rt60):
        assert pra.experimental.measure_rt60(response, RATE, decay_db=20) == pytest.approx(rt60, rel=0.1)
        assert abs(np.argmax(np.abs(response))) < 50  # it starts at the direct sound
        assert np.sum(response.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)
    again = synthesize_rooms(3, (0.25, 0.8), RATE, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(bank.responses, again.responses))
    other = synthesize_rooms(3, (0.25, 0.8), RATE, seed=2)
    assert other.rt60 != bank.rt60


def test_a_reverberated_click_decays_with_the_rooms_reverberation_time():
    import pyroomacoustics as pra

    click = np.zeros(int(1.5 * RATE), np.float32)
    click[1600] = 0.9
    wet = augment(only(reverb_p=1.0, rooms=1, rt60=(0.5, 0.5)), click)
    assert np.abs(click[1600 + 160:]).max() == 0.0 and np.abs(wet[1600 + 160:]).max() > 0  # a tail where there was none
    tail = wet[1600:]
    assert pra.experimental.measure_rt60(tail, RATE, decay_db=20) == pytest.approx(0.5, rel=0.15)
    assert edc_db(tail)[int(0.25 * RATE)] == pytest.approx(-30.0, abs=6.0)  # 60 dB per 0.5 s
    assert np.sqrt(np.mean(wet.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(click.astype(np.float64) ** 2)),
                                                                          rel=1e-4)  # the level is kept


def test_a_users_impulse_responses_are_convolved_as_they_are(tmp_path, white):
    response = np.zeros(400, np.float32)
    response[[0, 120, 399]] = [1.0, 0.5, -0.25]
    (tmp_path / "rir").mkdir()
    sf.write(tmp_path / "rir" / "hall.wav", response, RATE, subtype="FLOAT")
    x = white[:RATE]
    wet = augment(only(reverb_p=1.0, rir_dir=str(tmp_path / "rir")), x)
    expected = np.convolve(x.astype(np.float64), response)[:RATE]
    expected *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(expected**2))
    np.testing.assert_allclose(wet, expected, atol=1e-5)


# --- talker and microphone ---------------------------------------------------------------------------

@pytest.mark.parametrize("semitones", [3.0, -4.0])
def test_pitch_shift_moves_a_tones_peak_and_keeps_its_length(semitones):
    x = tone(440, 1.0)
    y = augment(only(pitch_p=1.0, pitch_semitones=(semitones, semitones)), x)
    assert len(y) == len(x)
    assert peak_hz(y) == pytest.approx(440 * 2 ** (semitones / 12), rel=0.005)


def test_speed_perturbation_resamples_tempo_and_pitch_together():
    x = tone(440, 1.0)
    y = augment(only(speed_p=1.0, speed=(1.25, 1.25)), x)
    assert abs(len(y) - RATE / 1.25) <= 1
    assert peak_hz(y) == pytest.approx(550, rel=0.005)


def test_band_limiting_low_pass_telephone_and_tilt(white):
    def change(mix, low, high, **values):
        y = augment(only(band_p=1.0, band_mix=mix, **values), white)
        return db(band_energy(y, low, high) / band_energy(white, low, high))

    assert change((0, 1, 0), 4000, 8000, lowpass_hz=(2000.0, 2000.0)) <= -12.0  # an octave above the cut-off
    assert change((0, 1, 0), 0, 1000, lowpass_hz=(2000.0, 2000.0)) == pytest.approx(0.0, abs=1.0)
    assert change((1, 0, 0), 0, 100) <= -10.0 and change((1, 0, 0), 6800, 8000) <= -10.0  # 300-3400 Hz
    assert change((1, 0, 0), 600, 2500) == pytest.approx(0.0, abs=1.5)
    assert 6.5 <= change((0, 0, 1), 7000, 8000, tilt_db=(9.0, 9.0)) <= 9.5
    assert change((0, 0, 1), 0, 200, tilt_db=(9.0, 9.0)) == pytest.approx(0.0, abs=0.5)


def test_gain_in_db(white):
    y = augment(only(gain_p=1.0, gain_db=(-6.0, -6.0)), white)
    np.testing.assert_allclose(y, white * 10 ** (-6 / 20), rtol=1e-6)
    assert db(np.sum(y.astype(np.float64) ** 2) / np.sum(white.astype(np.float64) ** 2)) == pytest.approx(-6.0, abs=1e-4)


@pytest.mark.parametrize("seconds", [0.05, -0.03])
def test_time_shift_by_cross_correlation(white, seconds):
    from scipy.signal import correlate

    x = np.zeros(RATE, np.float32)
    x[5000:9000] = white[:4000]
    y = augment(only(shift_p=1.0, shift_seconds=(seconds, seconds)), x)
    lag = int(np.argmax(correlate(y, x, mode="full"))) - (len(x) - 1)
    assert lag == round(seconds * RATE)


# --- where augmentation is off -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synth.write_dataset(root, classes=3, per_class=8, seconds=0.5, seed=5, stream_seconds=10.0)
    return root


def loud(**values) -> dict:
    """Recipe overrides: every clip augmented by every step (two small rooms)."""
    return {"augment": asdict(replace(WaveAugment(p=1.0, rooms=2), **{k: 1.0 for k in STEPS}, **values))}


def test_a_validation_dataset_is_never_augmented(tiny_data):
    data = read_dataset(tiny_data, val_fraction=0.3)
    recipe = load_recipe("demo", overrides={**loud(), "target_length": 48})
    config = F.FbankConfig(target_length=48, mean=-5.0, std=4.0)
    val = ClipDataset(data.splits["val"], 3, config, recipe, False)
    trained = ClipDataset(data.splits["val"], 3, config, recipe, True)
    assert val.augmenter is None
    for i in range(len(val)):
        clean = F.normalize(F.pad_or_crop(F.fbank(val.wave(i), config), 48), config)
        np.testing.assert_array_equal(val[i][0].numpy(), clean)
        assert not np.allclose(trained[i][0].numpy(), clean, atol=1e-3)


def test_training_augments_each_training_clip_once_an_epoch_and_nothing_else(tmp_path, tiny_data, monkeypatch):
    """Validation and test scoring go through datasets of their own: with every training clip augmented, the
    augmenter sees exactly the training clips (a validation or test clip augmented would add calls)."""
    from astedge.train.loop import train

    rows = ["path,labels,split"] + [f"{p.relative_to(tiny_data)},{p.parent.name},{('train', 'val', 'test')[k % 3]}"
                                    for k, p in enumerate(sorted(tiny_data.rglob("*/*.wav")))]
    (tiny_data / "manifest.csv").write_text("\n".join(rows) + "\n")
    data = read_dataset(tiny_data / "manifest.csv")
    calls = []
    original = Augmenter.__call__
    monkeypatch.setattr(Augmenter, "__call__", lambda self, wave, key: calls.append(key) or original(self, wave, key))
    messages = []
    result = train(data, tmp_path / "run", load_recipe("demo", overrides={**TINY, **loud(), "batch_size": 64}),
                   log=messages.append, show_progress=False)
    assert result.test["clips"] == len(data.splits["test"]) > 0
    assert sorted(k[2] for k in calls) == list(range(len(data.splits["train"]))) and {k[1] for k in calls} == {1}
    assert any("waveform augmentation of 100% of the clips" in str(m) for m in messages)
    assert any(str(m).startswith("warning: batch 64 on") for m in messages)  # and the batch is too large


def test_predict_and_export_run_without_the_augmentation_libraries(tmp_path, tiny_data):
    """A model trained with augmentation is scored and exported without it: both run where audiomentations and
    pyroomacoustics cannot be imported, and predict's scores are the model's on the clean clip."""
    from astedge.audio.decode import load_audio
    from astedge.model.checkpoint import load_checkpoint
    from astedge.train.loop import train

    data = read_dataset(tiny_data, val_fraction=0.3)
    result = train(data, tmp_path / "run", load_recipe("demo", overrides={**TINY, **loud()}), log=lambda *a: None,
                   show_progress=False)
    ckpt = load_checkpoint(result.best)
    assert ckpt.provenance["recipe"]["augment"]["p"] == 1.0
    clip = data.splits["val"][0].path
    blocked = ("audiomentations", "pyroomacoustics", "librosa")
    code = "import sys; from astedge.cli import main; sys.argv = ['astedge', *{args!r}]; main()"
    got = run_without_torch(code.format(args=["predict", str(clip), "-m", str(result.best), "--json", "-k", "3"]),
                            blocked)
    assert got.returncode == 0, got.stderr[-1500:]
    config = ckpt.feature_config
    x = F.normalize(F.pad_or_crop(F.fbank(load_audio(clip, RATE), config), config.target_length), config)
    with torch.no_grad():
        probs = ckpt.build_model()(torch.from_numpy(x[None])).softmax(-1)[0].numpy()
    top = json.loads(got.stdout)["top"]
    assert [row["index"] for row in top] == list(np.argsort(-probs)[:3])
    assert top[0]["score"] == pytest.approx(float(probs.max()), abs=1e-4)
    exported = run_without_torch(code.format(args=["export", str(result.best), "-o", str(tmp_path / "export"),
                                                   "--no-engine", "--json"]), blocked)
    assert exported.returncode == 0, exported.stderr[-1500:]
    assert (tmp_path / "export" / "model.onnx").is_file()


# --- seeds ------------------------------------------------------------------------------------------

def test_the_same_key_gives_bit_identical_clips_and_leaves_global_random_state_alone(speech_like):
    spec = replace(WaveAugment(p=1.0, rooms=2), **{k: 1.0 for k in STEPS})
    first, second = Augmenter(spec, RATE, seed=3), Augmenter(spec, RATE, seed=3)
    random.seed(11)
    np.random.seed(11)
    expected = (random.random(), np.random.random())
    random.seed(11)
    np.random.seed(11)
    a = first(speech_like, (3, 1, 4))
    assert (random.random(), np.random.random()) == expected  # the caller's random streams are untouched
    assert np.array_equal(a, second(speech_like, (3, 1, 4))) and np.array_equal(a, first(speech_like, (3, 1, 4)))
    assert not np.array_equal(a, first(speech_like, (3, 2, 4)))  # another epoch
    assert not np.array_equal(a, Augmenter(spec, RATE, seed=4)(speech_like, (4, 1, 4)))  # another seed


def test_batches_do_not_depend_on_the_worker_count(tiny_data):
    data = read_dataset(tiny_data, val_fraction=0.3)
    recipe = load_recipe("demo", overrides={**loud(), "target_length": 48})
    dataset = ClipDataset(data.splits["train"], 3, F.FbankConfig(target_length=48), recipe, True)
    dataset.epoch = 2
    batches = {workers: list(torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers))
               for workers in (0, 2)}
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[0], batches[2]))


def test_a_seeded_run_with_augmentation_repeats_bit_for_bit(tmp_path, tiny_data):
    from astedge.model.checkpoint import load_checkpoint
    from astedge.train.loop import train

    data = read_dataset(tiny_data, val_fraction=0.3)
    quiet = dict(log=lambda *a: None, show_progress=False)
    runs, recipes = {}, {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        recipes[name] = load_recipe("demo", overrides={**TINY, **loud(), "seed": seed})
        runs[name] = load_checkpoint(train(data, tmp_path / name, recipes[name], **quiet).best).state_dict
    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(np.array_equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
    written = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert written["augment"] == json.loads(json.dumps(asdict(recipes["a"].augment)))  # every step and range
    assert load_recipe("demo", tmp_path / "a" / "recipe.json") == recipes["a"]  # recipe.json reproduces the recipe
