"""Reproducible spoken-keyword data made with text-to-speech, in the Speech Commands v2 layout.

What it is for: measuring whether a model trained from scratch generalises to voices it never
heard.  Every clip is synthesised locally (no download) by one of four TTS engines, so the data
set can be rebuilt anywhere the Debian packages below install, bit for bit from the same seed.

Layout (what ``astedge.data.datasets.read_speech_commands`` and torchaudio's SPEECHCOMMANDS read)::

    OUT/<word>/<speaker>_nohash_<n>.wav   1 s, 16 kHz, mono, PCM16; n = 0 .. per_speaker-1
    OUT/validation_list.txt              lines "word/<speaker>_nohash_<n>.wav"
    OUT/testing_list.txt                 same; every file in neither list is training data
    OUT/speakers.tsv, OUT/clips.tsv      what each speaker / clip is (engine, voice, pitch, SNR..)
    OUT/generation.json                  the arguments, the command line, the engine versions

The three splits are speaker-disjoint, and more than that: *voice-disjoint*.  A **speaker** is one
voice configuration: engine + voice (for espeak-ng: accent ``en``, ``en-us``, ``en-gb-scotland``,
``en-gb-x-rp``, ``en-029``, ``en-us-nyc``, ``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``, combined with a
variant ``+m1..m8``, ``+f1..f5``, ``+croak``, ``+klatt``, ``+whisper`` or one of ~50 named
variants) + a fixed base speed, base pitch and "vocal tract" resampling factor drawn per speaker.
Its id (8 hex digits, as in Speech Commands) is a hash of that configuration.  Speakers are
grouped by the recorded voice behind them (espeak-ng: the variant family, e.g. ``klatt..klatt6``
or ``steph..steph3``; the other engines: the donor, so flite ``kal``/``kal16`` and festival
``kal_diphone`` are one group, espeak-ng ``mb-us1`` and festival ``us1_mbrola`` are one group) and
every group goes to one split only.  The groups' split and the training and validation speakers
depend on the seed and the speaker counts, not on the words, so the same seed gives the same
training speakers for every word set, and a model trained on ``kws10`` never heard a voice of the
digits set's test split either (test speakers can differ between word sets where a voice is
left out for a word, see mb-us3 below).

Each utterance gets its own randomness on top of the speaker's: speed x U(0.9, 1.1), pitch
(espeak-ng: -p +-6; flite/festival: f0 target x U(0.95, 1.05)), resampling factor x
U(0.985, 1.015), speech level U(-30, -15) dBFS RMS, a random placement inside the 1 s clip (the
word, trimmed of the engine's own silence and given 30 ms margins, is kept whole: a word that
would not fit is synthesised again faster, and cropped only if that fails, which clips.tsv marks),
and white or pink background noise at SNR U(20, 40) dB over the whole clip.  Audio is produced at
the engine's native rate (espeak-ng 22.05 kHz, mbrola 16 kHz, flite 8/16 kHz, festival 10/16/32
kHz) and resampled to 16 kHz with soxr VHQ.  Every random number derives from
(seed, speaker, word, repetition), so a subset (``--clips-per-word``) holds exactly the files of
the full set.

Engines (Debian bookworm packages; ``mbrola``, ``festvox-don``, ``festvox-rablpc16k`` and
``festvox-us1..3``/``festvox-en1`` are in ``contrib``, the ``mbrola-*`` voices in ``non-free``: an
apt source with ``Components: contrib non-free`` has to be added for them; the rest is ``main``):

    espeak    espeak-ng formant synthesis                          apt: espeak-ng
    mbrola    espeak-ng front end + MBROLA diphones mb-us1/us2/us3/en1
                                                                   apt: mbrola mbrola-us1 mbrola-us2
                                                                        mbrola-us3 mbrola-en1
    flite     flite voices kal (8 kHz), kal16, awb, rms, slt       apt: flite
    festival  kal_diphone ked_diphone rab_diphone don_diphone us1_mbrola us2_mbrola us3_mbrola
              en1_mbrola cmu_us_slt_arctic_hts                    apt: festival festvox-kallpc16k
              festvox-kdlpc16k festvox-rablpc16k festvox-don festvox-us1 festvox-us2 festvox-us3
              festvox-en1 festvox-us-slt-hts

Voices that are not installed are probed at start and left out (the script says which, and
generation.json records it).  MBROLA voices are also tried on every word, because espeak-ng's
phoneme tables for them have gaps: mbrola then puts silence in place of the missing diphone, e.g.
``mb-us3`` has no ``O2`` and says "on" and "off" without their vowel, so it is left out of the core
word set (not of the digits).  Such a voice is left out for all words, keeping the words balanced.
Pitch: espeak-ng ``-p``; flite ``int_f0_target_mean``; festival ``int_lr_params``.  flite ``rms``
and festival ``cmu_us_slt_arctic_hts`` take no pitch setting (their speakers get a wider
resampling factor instead).

``--engines`` says which engines each split draws from:

* ``heldout`` (default): training and validation speakers are espeak-ng formant voices (disjoint
  variant families); the **test split uses only engines never used in training**: mbrola, flite
  and festival (their 18 voices, 11 donors).  Validation accuracy measures generalisation to new
  voices of the training engine, test accuracy to new engines and real-speaker diphones.
* ``mixed``: every split draws from every available engine (still group-disjoint; the donors
  are shared out like the espeak-ng families, in proportion to the speaker counts, so with the
  default counts validation and test get one donor each and training the other nine).
* a comma list, e.g. ``espeak,flite``: ``mixed`` restricted to those engines.
* explicit, e.g. ``train=espeak,mbrola/val=espeak,mbrola/test=flite,festival``.

Speakers are drawn round-robin over the voice groups allotted to a split (every group once
before any twice, every voice once before any twice), espeak-ng accents cycled.

Default sizes: 100 training speakers x 2 repetitions x 10 words = 2000 training clips; 15
validation speakers (300 clips); test 15 speakers, or, when the test engines are all held out
from training, one speaker per distinct held-out voice (18, or 17 without mb-us3: 340-360
clips).  ``--clips-per-word N`` keeps N training clips per word, from N different speakers where
there are that many; validation and test stay whole.

Data sets made with this script (2 processes, under nice on 2 busy vCPUs: 1-1.3 min and ~84 MB
each)::

    # /work/data/kws10: train 2000 clips / 100 speakers, val 300 / 15, test 340 / 17
    # (mbrola 3, flite 5, festival 9 voices)
    nice -n 10 .venv/bin/python benchmarks/speech_data.py /work/data/kws10

    # /work/data/kws-digits: train 2000 / 100, val 300 / 15, test 360 / 18; the training and
    # validation speakers are kws10's
    nice -n 10 .venv/bin/python benchmarks/speech_data.py /work/data/kws-digits \\
        --words zero,one,two,three,four,five,six,seven,eight,nine

    # /work/data/kws-digits-10: the "10 clips per word" fine-tuning set: 100 training clips from
    # 69 speakers, val and test as kws-digits; every file is byte-identical to kws-digits' own
    nice -n 10 .venv/bin/python benchmarks/speech_data.py /work/data/kws-digits-10 \\
        --words zero,one,two,three,four,five,six,seven,eight,nine --clips-per-word 10

``--check OUT`` reads a generated folder back and prints counts per split, speakers per split,
durations, levels, and clips whose word energy reaches the clip edges.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16000
CLIP = SR  # 1 s
CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ENGINES = ("espeak", "mbrola", "flite", "festival")

ESPEAK_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
                  "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# espeak-ng variants (voices/!v), gender as espeak-ng lists it.  Left out: novelty voices
# (Demonic, announcer, robosoft*, UniRobot, anikaRobot, RicishayMax*, Tweaky, Storm, fast,
# AnxiousAndy, Marco, "Mr serious").
ESPEAK_VARIANTS_F = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "aunty", "belinda",
                     "grandma", "linda", "steph", "steph2", "steph3", "anika", "whisperf")
ESPEAK_VARIANTS_M = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "croak", "klatt", "klatt2",
                     "klatt3", "klatt4", "klatt5", "klatt6", "whisper", "adam", "Alex", "Andy",
                     "antonio", "benjamin", "boris", "caleb", "david", "Denis", "Diogo", "ed",
                     "edward", "edward2", "Gene", "Gene2", "grandpa", "gustave", "Henrique", "Hugo",
                     "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta", "Lee",
                     "marcelo", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Nguyen",
                     "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro",
                     "shelby", "travis", "victor", "zac")
# name -> (donor group, gender, default f0 in Hz where the engine takes an absolute f0)
MBROLA_VOICES = {"mb-us1": ("us1", "F", None), "mb-us2": ("us2", "M", None),
                 "mb-us3": ("us3", "M", None), "mb-en1": ("en1", "M", None)}
FLITE_VOICES = {"kal": ("kal", "M", 105.0), "kal16": ("kal", "M", 105.0), "awb": ("awb", "M", 115.0),
                "rms": ("rms", "M", 90.0), "slt": ("slt", "F", 165.0)}
FESTIVAL_VOICES = {"kal_diphone": ("kal", "M", None), "ked_diphone": ("ked", "M", None),
                   "rab_diphone": ("rab", "M", None), "don_diphone": ("don", "M", None),
                   "us1_mbrola": ("us1", "F", None), "us2_mbrola": ("us2", "M", None),
                   "us3_mbrola": ("us3", "M", None), "en1_mbrola": ("en1", "M", None),
                   "cmu_us_slt_arctic_hts": ("slt", "F", None)}
# voices whose engine takes no pitch setting here (flite's clustergen rms ignores int_f0_target_mean
# and f0_shift; festival's HTS voice ignores int_lr_params and hts_engine -fm): their speakers get
# pitch 1.0 and a wider resampling factor instead
NO_PITCH = ("rms", "cmu_us_slt_arctic_hts")
PRESETS = {"heldout": {"train": ("espeak",), "val": ("espeak",), "test": ("mbrola", "flite", "festival")},
           "mixed": {s: ENGINES for s in ("train", "val", "test")}}
SPLITS = ("train", "val", "test")


def _h32(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _variant_family(variant: str) -> str:
    if variant[:1] in "mf" and variant[1:].isdigit():
        return variant  # m1..m8, f1..f5 are distinct voices
    return variant.rstrip("0123456789").lower()


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str          # espeak: the variant; others: the engine's voice name
    group: str         # voices of one group never go to two splits
    gender: str

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


@dataclass(frozen=True)
class Speaker:
    id: str
    split: str
    engine: str
    voice: str          # espeak-ng voice string ("en-us+m3", "mb-us1"), flite/festival voice name
    group: str
    gender: str
    speed: float        # x the engine's default rate
    pitch: float        # espeak-ng: -p 0..99; flite/festival diphone voices: x default f0
    tape: float         # resampling factor (>1 raises pitch and formants, shortens)


# --------------------------------------------------------------------------- synthesis

def _run(cmd, stdin=None, timeout=60):
    r = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    if "unknown, replaced with" in r.stderr:
        # mbrola lacks a diphone espeak-ng asked for and puts silence in its place (mb-us3 has no
        # O2, the vowel of en-us "on", "off"): the word is broken
        raise RuntimeError("mbrola: " + "; ".join(l.strip() for l in r.stderr.splitlines() if "unknown" in l))


def synthesize(engine: str, voice: str, text: str, speed: float, pitch: float, wav: str):
    """Run one engine; returns (float32 mono audio, native sample rate)."""
    if os.path.exists(wav):
        os.remove(wav)
    if engine in ("espeak", "mbrola"):
        p = int(round(min(max(pitch, 0), 99)))
        _run(["espeak-ng", "-v", voice, "-s", str(int(round(175 * speed))), "-p", str(p), "-w", wav,
              "--", text])
    elif engine == "flite":
        f0 = FLITE_VOICES[voice][2] * pitch
        _run(["flite", "-voice", voice, "-t", text, "-o", wav, "--setf", f"duration_stretch={1 / speed:.4f}",
              "--setf", f"int_f0_target_mean={f0:.1f}"])
    elif engine == "festival":
        evals = ["-eval", f"(voice_{voice})"]
        if voice.endswith("_hts"):
            evals += ["-eval", f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {speed:.4f}))))']
        else:
            evals += ["-eval", f"(Parameter.set 'Duration_Stretch {1 / speed:.4f})",
                      "-eval", "(set! int_lr_params (cons (list 'target_f0_mean (* "
                               f"{pitch:.4f} (car (cdr (assoc 'target_f0_mean int_lr_params))))) int_lr_params))"]
        _run(["text2wave", *evals, "-o", wav], stdin=text + "\n")
    else:
        raise ValueError(f"unknown engine {engine}")
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    return x[:, 0].copy(), sr


def active_region(x: np.ndarray, sr: int, floor_db: float = -45.0):
    """First and last sample of the frames within floor_db of the loudest 5 ms frame."""
    hop = max(1, sr // 200)
    n = len(x) // hop
    if n == 0:
        return None
    e = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    top = e.max()
    if top < 1e-4:
        return None
    on = np.flatnonzero(e > top * 10 ** (floor_db / 20))
    return int(on[0] * hop), int(min(len(x), (on[-1] + 1) * hop))


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = f[1]
    y = np.fft.irfft(spec / np.sqrt(f), n)
    return y / np.sqrt(np.mean(y ** 2))


def render_clip(task: dict, tmpdir: str) -> dict:
    """Synthesise one word for one speaker and make the 1 s clip; returns its clips.tsv row."""
    spk = task["speaker"]
    rng = np.random.default_rng([task["seed"], _h32(spk["id"]), _h32(task["word"]), task["rep"], 1])
    speed = spk["speed"] * rng.uniform(0.9, 1.1)
    if spk["engine"] in ("espeak", "mbrola"):
        pitch = spk["pitch"] + rng.uniform(-6, 6)
    else:
        pitch = spk["pitch"] * rng.uniform(0.95, 1.05)
    tape = spk["tape"] * rng.uniform(0.985, 1.015)
    level_db = rng.uniform(-30, -15)
    snr_db = rng.uniform(20, 40)
    noise_kind = "pink" if rng.random() < 0.5 else "white"
    place = rng.random()
    noise_rng = np.random.default_rng(rng.integers(1 << 62))
    margin = int(0.03 * SR)
    wav = os.path.join(tmpdir, "tts.wav")
    resynth, cropped = 0, False
    for attempt in range(3):
        x, sr = synthesize(spk["engine"], spk["voice"], task["word"], speed, pitch, wav)
        reg = active_region(x, sr)
        if reg is None:
            raise RuntimeError(f"{spk['voice']} said nothing for {task['word']!r}")
        a, b = reg
        m = int(0.03 * sr)  # engines like espeak-ng start speaking at sample 0: pad before taking margins
        x = np.concatenate([np.zeros(m, np.float32), x[max(0, a - m): b + m], np.zeros(m, np.float32)])
        y = soxr.resample(x.astype(np.float64), sr * tape, SR, "VHQ")
        reg = active_region(y, SR)
        a, b = reg
        y = y[max(0, a - margin): b + margin]
        if len(y) <= CLIP:
            break
        resynth += 1
        speed *= len(y) / (CLIP - SR // 50)
    if len(y) > CLIP:  # still too long: crop, keeping the loudest part in
        cropped = True
        start = int(place * (len(y) - CLIP))
        y = y[start: start + CLIP]
    reg = active_region(y, SR)
    a, b = reg
    speech_rms = float(np.sqrt(np.mean(y[a:b] ** 2)))
    gain = 10 ** (level_db / 20) / speech_rms
    gain = min(gain, 0.89 / float(np.max(np.abs(y))))
    y = y * gain
    speech_rms *= gain
    offset = int(place * (CLIP - len(y)))
    out = np.zeros(CLIP)
    out[offset: offset + len(y)] = y
    noise = _pink(CLIP, noise_rng) if noise_kind == "pink" else noise_rng.standard_normal(CLIP)
    out += noise * speech_rms / 10 ** (snr_db / 20)
    out = np.clip(out, -1, 32767 / 32768)
    path = Path(task["out"]) / task["word"] / f"{spk['id']}_nohash_{task['rep']}.wav"
    sf.write(str(path), out.astype(np.float32), SR, subtype="PCM_16")
    return dict(file=f"{task['word']}/{path.name}", split=spk["split"], speaker=spk["id"], word=task["word"],
                rep=task["rep"], engine=spk["engine"], voice=spk["voice"], offset_s=round(offset / SR, 4),
                speech_s=round(len(y) / SR, 4), level_dbfs=round(20 * math.log10(speech_rms + 1e-12), 2),
                snr_db=round(snr_db, 2), noise=noise_kind, speed=round(speed, 4), pitch=round(pitch, 3),
                tape=round(tape, 4), resynth=resynth, cropped=int(cropped))


_TMP = None


def _init_worker(parent: str):
    global _TMP
    _TMP = tempfile.mkdtemp(dir=parent)


def _work(task):
    try:
        return render_clip(task, _TMP)
    except Exception as e:  # reported, not fatal
        return dict(error=f"{task['word']}/{task['speaker']['id']} ({task['speaker']['voice']}): {e}")


# --------------------------------------------------------------------------- voices and speakers

def _probe(engine: str, voice: str, word: str = "yes") -> str | None:
    """None when `voice` of `engine` says `word` audibly, else why not."""
    with tempfile.TemporaryDirectory() as d:
        try:
            x, sr = synthesize(engine, voice, word, 1.0, 50 if engine in ("espeak", "mbrola") else 1.0,
                               os.path.join(d, "p.wav"))
        except Exception as e:
            return str(e)[-200:]
        return None if active_region(x, sr) is not None else "silent output"


def available_voices(engines, log=print, words=("yes",)) -> tuple[list[Voice], list[str], list[str]]:
    """The voices of `engines` that work here, the espeak-ng accents that work, and what failed.

    MBROLA voices are tried on every word (espeak-ng's phoneme tables for them have gaps), the
    others on "yes"; a voice that fails on one word is left out whole, so that every word keeps
    the same speakers."""
    voices, accents, failed = [], [], []
    binaries = {"espeak": "espeak-ng", "mbrola": "espeak-ng", "flite": "flite", "festival": "text2wave"}
    for engine in engines:
        if shutil.which(binaries[engine]) is None:
            failed.append(f"{engine}: {binaries[engine]} not installed")
            continue
        if engine == "espeak":
            for acc in ESPEAK_ACCENTS:
                (failed.append(f"espeak {acc}: {why}") if (why := _probe("espeak", acc)) else accents.append(acc))
            for var in ESPEAK_VARIANTS_F + ESPEAK_VARIANTS_M:
                why = _probe("espeak", f"en-us+{var}")
                if why:
                    failed.append(f"espeak +{var}: {why}")
                else:
                    voices.append(Voice("espeak", var, "espeak:" + _variant_family(var),
                                        "F" if var in ESPEAK_VARIANTS_F else "M"))
            if not accents:
                voices = [v for v in voices if v.engine != "espeak"]
            continue
        table = {"mbrola": MBROLA_VOICES, "flite": FLITE_VOICES, "festival": FESTIVAL_VOICES}[engine]
        for name, (group, gender, _) in table.items():
            why = None
            for w in (words if engine == "mbrola" else ("yes",)):
                if why := _probe(engine, name, w):
                    why = f"{w!r}: {why}"
                    break
            if why:
                failed.append(f"{engine} {name}: {why}")
            else:
                voices.append(Voice(engine, name, "donor:" + group, gender))
    for f in failed:
        log(f"  voice unavailable: {f}")
    return voices, accents, failed


def parse_engines(spec: str) -> dict[str, tuple[str, ...]]:
    if spec in PRESETS:
        return dict(PRESETS[spec])
    if "=" not in spec:
        names = tuple(e.strip() for e in spec.split(",") if e.strip())
        return {s: names for s in SPLITS} | _check_engines(names)
    out = {}
    for part in spec.split("/"):
        split, _, names = part.partition("=")
        split = {"validation": "val", "testing": "test", "training": "train"}.get(split.strip(), split.strip())
        if split not in SPLITS:
            raise ValueError(f"--engines: unknown split {split!r} (train, val, test)")
        out[split] = tuple(e.strip() for e in names.split(",") if e.strip())
        _check_engines(out[split])
    missing = [s for s in SPLITS if s not in out]
    if missing:
        raise ValueError(f"--engines: no engines for {', '.join(missing)}")
    return out


def _check_engines(names) -> dict:
    bad = [e for e in names if e not in ENGINES]
    if bad or not names:
        raise ValueError(f"--engines: unknown engine(s) {bad} (known: {', '.join(ENGINES)})")
    return {}


def _count(value, n_train: int, fractions: dict) -> int | None:
    """A count (int) or a fraction of all speakers (float < 1); None for 'auto'."""
    if value in (None, "auto"):
        return None
    v = float(value)
    if v >= 1:
        return int(v)
    total = n_train / max(1e-9, 1 - sum(float(f) for f in fractions.values()))
    return max(1, int(round(v * total)))


def plan_speakers(voices: list[Voice], accents: list[str], engines: dict, counts: dict, seed: int) -> list[Speaker]:
    """Allot voice groups to splits (each group to one split) and draw the speakers of each split."""
    rng = np.random.default_rng([seed, _h32("speakers")])
    groups = defaultdict(list)
    for v in voices:
        groups[v.group].append(v)
    # The splits that may use a group: those whose engines include one of the group's engines.
    # Groups are shared out among them by kind (espeak-ng variant families apart from the donors of
    # the other engines), so that in "mixed" every split gets some of each kind.
    by_eligible = defaultdict(list)
    for g in sorted(groups):
        eligible = tuple(s for s in SPLITS if any(v.engine in engines[s] for v in groups[g]))
        if eligible:
            by_eligible[eligible, g.split(":")[0]].append(g)
    allotted = {s: [] for s in SPLITS}
    for (eligible, _), gs in sorted(by_eligible.items()):
        gs = [gs[i] for i in rng.permutation(len(gs))]
        # share out in proportion to the speakers each split wants (a split with "auto" counts as 15)
        want = np.array([counts[s] or 15 for s in eligible], dtype=float)
        share = want / want.sum() * len(gs)
        k = np.floor(share).astype(int)
        if len(gs) >= len(eligible):
            k = np.maximum(k, 1)
        while k.sum() > len(gs):
            k[np.argmax(k)] -= 1
        for i in np.argsort(-(share - k))[: len(gs) - k.sum()]:
            k[i] += 1
        start = 0
        for s, n in zip(eligible, k):
            allotted[s] += gs[start: start + n]
            start += n
    train_engines = set(engines["train"])
    speakers, seen = [], set()
    for split in SPLITS:
        pool = [v for g in allotted[split] for v in groups[g] if v.engine in engines[split]]
        if not pool:
            raise SystemExit(f"no voice left for the {split} split (engines {engines[split]})")
        n = counts[split]
        if n is None:  # auto: 15, or every held-out voice once when the split's engines are unseen in training
            n = 15
            if split != "train" and not (set(engines[split]) & train_engines):
                n = max(n, len(pool))
        # every group once before any twice, every voice once before any twice
        by_group = defaultdict(list)
        for i in rng.permutation(len(pool)):
            by_group[pool[i].group].append(pool[i])
        group_order = sorted(by_group)
        group_order = [group_order[i] for i in rng.permutation(len(group_order))]
        order = []
        while any(by_group.values()):
            for g in group_order:
                if by_group[g]:
                    order.append(by_group[g].pop())
        accent_cycle = [accents[i] for i in rng.permutation(len(accents))] if accents else []
        for i in range(n):
            v = order[i % len(order)]
            speed = float(rng.uniform(0.85, 1.15))
            if v.engine == "espeak":
                acc = accent_cycle[i % len(accent_cycle)]
                voice, pitch = f"{acc}+{v.name}", float(rng.uniform(30, 70))
            elif v.engine == "mbrola":
                voice, pitch = v.name, float(rng.uniform(30, 70))
            else:
                voice, pitch = v.name, float(rng.uniform(0.85, 1.2))
            if v.name in NO_PITCH:
                pitch, tape = 1.0, float(rng.uniform(0.9, 1.1))
            else:
                tape = float(rng.uniform(0.95, 1.05))
            speed, pitch, tape = round(speed, 4), round(pitch, 4), round(tape, 4)
            sid = hashlib.sha1(f"{seed}|{v.engine}|{voice}|{speed}|{pitch}|{tape}".encode()).hexdigest()[:8]
            while sid in seen:
                sid = hashlib.sha1(sid.encode()).hexdigest()[:8]
            seen.add(sid)
            speakers.append(Speaker(sid, split, v.engine, voice, v.group, v.gender, speed, pitch, tape))
    groups_of = defaultdict(set)
    for s in speakers:
        groups_of[s.group].add(s.split)
    assert all(len(v) == 1 for v in groups_of.values()), "a voice group in two splits"
    return speakers


# --------------------------------------------------------------------------- data set

def make_dataset(out, words=CORE_WORDS, *, per_speaker: int = 2, train_speakers: int = 100,
                 val_speakers="15", test_speakers="auto", engines: str = "heldout",
                 clips_per_word: int | None = None, seed: int = 0, jobs: int = 2, force: bool = False,
                 log=print) -> dict:
    """Write the data set to `out` (Speech Commands v2 layout); returns a summary dict."""
    t0 = time.time()
    out = Path(out)
    words = [w.strip().lower() for w in (words.split(",") if isinstance(words, str) else words) if w.strip()]
    if len(set(words)) != len(words) or not words:
        raise ValueError("--words: empty or repeated")
    split_engines = parse_engines(engines)
    fractions = {k: v for k, v in (("val", val_speakers), ("test", test_speakers))
                 if v not in (None, "auto") and float(v) < 1}
    counts = {"train": int(train_speakers), "val": _count(val_speakers, train_speakers, fractions),
              "test": _count(test_speakers, train_speakers, fractions)}
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"{out} is not empty (use --force to replace a data set made by this script)")
        for d in out.iterdir():
            if d.is_dir() and not d.name.startswith((".", "_")):
                for f in d.glob("*.wav"):
                    f.unlink()
                if not any(d.iterdir()):
                    d.rmdir()
        for name in ("validation_list.txt", "testing_list.txt", "speakers.tsv", "clips.tsv", "generation.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    used = sorted({e for es in split_engines.values() for e in es}, key=ENGINES.index)
    log(f"probing voices of {', '.join(used)}")
    voices, accents, failed = available_voices(used, log, words)
    speakers = plan_speakers(voices, accents, split_engines, counts, seed)
    tasks = []
    for w in words:
        (out / w).mkdir(exist_ok=True)
        train = [s for s in speakers if s.split == "train"]
        pairs = [(s, r) for r in range(per_speaker) for s in train]
        if clips_per_word is not None:
            perm = np.random.default_rng([seed, _h32("clips", w)]).permutation(len(train))
            pairs = [(train[i], r) for r in range(per_speaker) for i in perm][:clips_per_word]
        pairs += [(s, r) for s in speakers if s.split != "train" for r in range(per_speaker)]
        tasks += [dict(seed=seed, out=str(out), word=w, rep=r, speaker=asdict(s)) for s, r in pairs]
    log(f"{len(speakers)} speakers, {len(tasks)} clips, {jobs} processes")
    rows, errors = [], []
    with tempfile.TemporaryDirectory(prefix="speech_data_") as tmp, \
            Pool(jobs, initializer=_init_worker, initargs=(tmp,)) as pool:
        for i, r in enumerate(pool.imap_unordered(_work, tasks, chunksize=4)):
            (errors if "error" in r else rows).append(r)
            if (i + 1) % 500 == 0:
                log(f"  {i + 1}/{len(tasks)} clips, {time.time() - t0:.0f} s")
    for e in errors:
        log(f"  FAILED {e['error']}")
    rows.sort(key=lambda r: r["file"])
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        (out / name).write_text("".join(r["file"] + "\n" for r in rows if r["split"] == split))
    cols = list(Speaker.__dataclass_fields__)
    (out / "speakers.tsv").write_text("\t".join(cols) + "\n" + "".join(
        "\t".join(str(getattr(s, c)) for c in cols) + "\n" for s in speakers))
    if rows:
        cols = list(rows[0])
        (out / "clips.tsv").write_text("\t".join(cols) + "\n" + "".join(
            "\t".join(str(r[c]) for c in cols) + "\n" for r in rows))
    summary = dict(
        clips={s: sum(r["split"] == s for r in rows) for s in SPLITS},
        speakers={s: len({r["speaker"] for r in rows if r["split"] == s}) for s in SPLITS},
        engines_per_split={s: dict(Counter(r["engine"] for r in rows if r["split"] == s)) for s in SPLITS},
        resynthesised=sum(r["resynth"] > 0 for r in rows), cropped=sum(r["cropped"] for r in rows),
        failed=len(errors), seconds=round(time.time() - t0, 1))
    versions = {}
    for cmd in (["espeak-ng", "--version"], ["flite", "--version"], ["festival", "--version"]):
        try:
            versions[cmd[0]] = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()[:120]
        except Exception:
            pass
    (out / "generation.json").write_text(json.dumps(dict(
        command=" ".join(sys.argv) if __name__ == "__main__" else None,
        args=dict(words=words, per_speaker=per_speaker, train_speakers=train_speakers, val_speakers=val_speakers,
                  test_speakers=test_speakers, engines=engines, split_engines=split_engines,
                  clips_per_word=clips_per_word, seed=seed),
        versions=versions, unavailable_voices=failed, summary=summary), indent=1) + "\n")
    log(json.dumps(summary))
    return summary


# --------------------------------------------------------------------------- check

def check_dataset(out, log=print) -> dict:
    """Read a folder back: sizes, speakers per split, levels; flag silent clips and words at the edges."""
    out = Path(out)
    listed = {}
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        listed.update({l.strip(): split for l in (out / name).read_text().splitlines() if l.strip()})
    words = sorted(d.name for d in out.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    stats = defaultdict(lambda: defaultdict(list))
    spk_split, problems = defaultdict(set), []
    per_word = defaultdict(Counter)
    for w in words:
        for p in sorted((out / w).glob("*.wav")):
            rel = f"{w}/{p.name}"
            split = listed.get(rel, "train")
            per_word[split][w] += 1
            spk_split[p.name.split("_nohash_")[0]].add(split)
            info = sf.info(str(p))
            x, sr = sf.read(str(p), dtype="float64")
            if sr != SR or info.channels != 1 or len(x) != CLIP or info.subtype != "PCM_16":
                problems.append(f"{rel}: {sr} Hz, {info.channels} ch, {len(x)} samples, {info.subtype}")
            hop = SR // 100
            e = 10 * np.log10(np.mean(x.reshape(-1, hop) ** 2, axis=1) + 1e-12)  # 10 ms frames
            floor = np.percentile(e, 10)
            top = e.max()
            st = stats[split]
            st["rms_db"].append(10 * math.log10(np.mean(x ** 2) + 1e-12))
            st["peak"].append(float(np.abs(x).max()))
            st["range_db"].append(top - floor)
            on = np.flatnonzero(e > floor + 12)
            span = (on[-1] - on[0] + 1) / 100 if len(on) else 0
            st["word_s"].append(span)
            if top - floor < 15:
                problems.append(f"{rel}: silent? loudest 10 ms only {top - floor:.1f} dB over the floor")
            elif max(e[0], e[-1]) > floor + 12:
                problems.append(f"{rel}: word energy in the first or last 10 ms (truncated?)")
            elif span < 0.06:
                problems.append(f"{rel}: only {span:.2f} s more than 12 dB over the floor (a click, not a word?)")
    bad_spk = {s: v for s, v in spk_split.items() if len(v) > 1}
    summary = {}
    for split in SPLITS:
        st = stats[split]
        n = sum(per_word[split].values())
        summary[split] = dict(clips=n, speakers=sum(split in v for v in spk_split.values()),
                              per_word=dict(per_word[split]))
        if n:
            summary[split].update({k: f"{np.min(v):.2f}/{np.median(v):.2f}/{np.max(v):.2f}" for k, v in st.items()})
    for split, s in summary.items():
        log(f"{split:5s} {json.dumps(s)}")
    log("(min/median/max; rms_db of the clip, peak, range_db = loudest 10 ms over the 10th-percentile floor, "
        "word_s = first to last 10 ms frame 12 dB over that floor)")
    log(f"speakers in two splits: {len(bad_spk)}; problems: {len(problems)}")
    for p in problems[:40]:
        log("  " + p)
    return dict(summary=summary, problems=problems, shared_speakers=sorted(bad_spk))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (Speech Commands v2 layout)")
    ap.add_argument("--words", default=",".join(CORE_WORDS),
                    help="comma-separated words (default: the ten Speech Commands core words); "
                         "'digits' for zero..nine")
    ap.add_argument("--per-speaker", type=int, default=2, help="repetitions of each word per speaker (2)")
    ap.add_argument("--train-speakers", type=int, default=100, help="training speakers (100)")
    ap.add_argument("--val-speakers", default="15", help="validation speakers: a count, or a fraction < 1 (15)")
    ap.add_argument("--test-speakers", default="auto",
                    help="test speakers: a count, a fraction < 1, or auto (15; every held-out voice once when "
                         "the test engines are unseen in training)")
    ap.add_argument("--engines", default="heldout",
                    help="heldout (train/val espeak-ng, test mbrola+flite+festival), mixed, a comma list, or "
                         "train=E,E/val=E/test=E,E (engines: espeak, mbrola, flite, festival)")
    ap.add_argument("--clips-per-word", type=int, default=None,
                    help="keep only N training clips per word (spread over speakers); val/test stay whole")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (2)")
    ap.add_argument("--force", action="store_true", help="replace the data set already in OUT")
    ap.add_argument("--check", action="store_true", help="only read OUT back and report")
    a = ap.parse_args(argv)
    if a.check:
        r = check_dataset(a.out)
        return 1 if r["problems"] or r["shared_speakers"] else 0
    words = ",".join(DIGITS) if a.words == "digits" else a.words
    s = make_dataset(a.out, words, per_speaker=a.per_speaker, train_speakers=a.train_speakers,
                     val_speakers=a.val_speakers, test_speakers=a.test_speakers, engines=a.engines,
                     clips_per_word=a.clips_per_word, seed=a.seed, jobs=a.jobs, force=a.force)
    return 1 if s["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
