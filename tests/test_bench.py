"""`astedge bench`: statistics against numpy, header probes (fake nvidia-smi/nvpmodel/jetson_clocks on PATH),
the CUDA-event timer against a recording test double, and the command end to end on a random tiny model
(structure and positivity only: nothing here asserts a speed)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astedge import timing
from astedge.measure import bench
from astedge.measure import bench_report
from astedge.measure import machine
from astedge.measure import random_weights
from astedge.errors import UserError

STAGE_KEYS = {"count", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
              "throughput_clips_s", "x_realtime", "real_time_factor", "samples_ms"}


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "astedge", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, **kwargs)


# --- statistics -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples", [np.arange(1.0, 101.0), np.array([5.0, 1.0, 3.0, 2.0, 4.0]),
                                     np.random.default_rng(0).gamma(2.0, 10.0, 997), np.array([7.25])])
@pytest.mark.parametrize("batch", [1, 8])
def test_summarize_matches_numpy(samples, batch):
    stats = timing.summarize(list(samples), batch=batch, audio_seconds=10.0)
    mean = samples.mean()
    assert stats["count"] == len(samples)
    assert stats["mean_ms"] == pytest.approx(mean)
    assert stats["std_ms"] == pytest.approx(samples.std())
    assert (stats["min_ms"], stats["max_ms"]) == (samples.min(), samples.max())
    for q in (50, 90, 95, 99):
        assert stats[f"p{q}_ms"] == pytest.approx(np.percentile(samples, q))
    assert stats["throughput_clips_s"] == pytest.approx(batch / (mean / 1e3))
    assert stats["x_realtime"] == pytest.approx(batch * 10.0 / (mean / 1e3))
    assert stats["real_time_factor"] == pytest.approx((mean / 1e3) / (batch * 10.0))
    assert stats["x_realtime"] * stats["real_time_factor"] == pytest.approx(1.0)


def test_summarize_known_values():
    stats = timing.summarize([10.0, 20.0, 30.0, 40.0], batch=2, audio_seconds=5.0)
    assert stats["mean_ms"] == 25.0 and stats["p50_ms"] == 25.0
    assert stats["p90_ms"] == pytest.approx(37.0)  # linear: 30 + 0.7 * 10
    assert stats["throughput_clips_s"] == pytest.approx(80.0)  # 2 clips per 25 ms
    assert stats["x_realtime"] == pytest.approx(400.0)  # 10 s of audio per 25 ms
    with pytest.raises(ValueError):
        timing.summarize([], batch=1, audio_seconds=10.0)


def test_option_parsing():
    assert bench.parse_batches("1,8,32") == [1, 8, 32]
    assert bench.parse_batches(" 8, 1,8") == [8, 1]
    for bad in ("0", "1,,2", "a", "-1", ""):
        with pytest.raises(UserError):
            bench.parse_batches(bad)
    from astedge.runtime.backends import BACKENDS

    assert bench.parse_backends("all") == list(BACKENDS)
    assert bench.parse_backends("torch,onnxruntime-cpu,torch") == ["torch", "onnxruntime-cpu"]
    with pytest.raises(UserError, match="unknown backend 'nope'"):
        bench.parse_backends("torch,nope")


# --- header probes --------------------------------------------------------------------------------------

def _script(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_gpu_and_jetson_probes_parse_the_tools(tmp_path, monkeypatch):
    _script(tmp_path, "nvidia-smi", 'echo "0, Orin (nvgpu), 540.4.0, P0, 1300 MHz, 3199 MHz, 1300 MHz, 3199 MHz, [N/A]"\n')
    _script(tmp_path, "nvpmodel", 'echo "NV Power Mode: MAXN_SUPER"\necho 2\n')
    _script(tmp_path, "jetson_clocks", 'echo "SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano"\n'
                                       'echo "GPU MinFreq=1020000000 MaxFreq=1020000000 CurrentFreq=1020000000"\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    smi = machine.nvidia_smi()
    assert smi["gpus"][0]["name"] == "Orin (nvgpu)" and smi["gpus"][0]["clocks.max.sm"] == "1300 MHz"
    jetson = machine.jetson_info()
    assert jetson["power_mode"] == "MAXN_SUPER" and jetson["clocks_locked"] is True
    assert jetson["gpu_freq_hz"] == {"min": 1020000000, "max": 1020000000, "current": 1020000000}

    _script(tmp_path, "jetson_clocks", 'echo "GPU MinFreq=306000000 MaxFreq=1020000000 CurrentFreq=306000000"\n')
    assert machine.jetson_info()["clocks_locked"] is False
    _script(tmp_path, "jetson_clocks", 'echo "Error: Run this script as root" >&2\nexit 1\n')
    info = machine.jetson_info()
    assert info["clocks_locked"] is None and "root" in info["clocks_locked_note"]
    _script(tmp_path, "nvidia-smi", 'echo "Field \\"clocks.sm\\" is not a valid field" >&2\nexit 2\n')
    assert "not a valid field" in machine.nvidia_smi()["error"]


# --- the command ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One run on a random tiny AST with a 128-frame (1 s) input, to keep the test fast; 1024 frames is the default."""
    out = tmp_path_factory.mktemp("bench")
    done = cli("bench", "--size", "tiny", "--frames", "128", "--backend", "onnxruntime-cpu,torch", "--iters", "5",
               "--json", "--plot", str(out / "latency.png"), "-o", str(out / "bench.md"), "-o", str(out / "bench.json"))
    return done, out


def test_bench_json_shape(bench_run):
    done, out = bench_run
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout is only the JSON
    assert json.loads((out / "bench.json").read_text()) == report
    assert report["benchmark"] == "astedge bench"
    assert set(report) >= {"header", "model", "settings", "backends", "unavailable", "results"}
    header = report["header"]
    assert {"date", "cpu", "cores", "python", "packages", "gpu", "jetson", "threads", "runtimes"} <= set(header)
    assert {"devices", "driver", "nvidia_smi"} <= set(header["gpu"])
    assert header["threads"]["torch"] >= 1 and header["threads"]["usable_cpus"] >= 1
    assert "onnxruntime" in header["runtimes"] and "torch" in header["runtimes"]
    model = report["model"]
    assert model["weights"] == random_weights.RANDOM_WEIGHTS and model["size"] == "tiny"
    assert model["input"] == [128, 128] and model["window_seconds"] == 1.0
    assert model["params_m"] > 0 and model["gflops_per_clip"] > 0
    assert report["settings"]["iters"] == 5 and report["settings"]["batches"] == [1]
    assert [b["name"] for b in report["backends"]] == ["onnxruntime-cpu", "torch"]
    assert report["unavailable"] == []
    assert [(r["backend"], r["batch"]) for r in report["results"]] == [("onnxruntime-cpu", 1), ("torch", 1)]
    for row in report["results"]:
        assert row["fbank"] == "numpy" and row["device"] == "cpu" and row["precision"] == "fp32"
        assert row["rounds"] == 5 and set(row["stages"]) == set(bench.STAGES)
        for stage in row["stages"].values():
            assert set(stage) == STAGE_KEYS and stage["count"] == 5 and len(stage["samples_ms"]) == 5
            assert all(stage[k] > 0 for k in STAGE_KEYS - {"samples_ms", "count", "std_ms"})
            assert stage["min_ms"] <= stage["p50_ms"] <= stage["p90_ms"] <= stage["p99_ms"] <= stage["max_ms"]
        # the end-to-end call does the fbank work and more: its median exceeds the fbank's fastest call
        assert row["stages"]["end_to_end"]["p50_ms"] > row["stages"]["fbank"]["min_ms"]


def test_bench_plot_and_markdown(bench_run):
    done, out = bench_run
    assert done.returncode == 0, done.stderr
    png = (out / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    text = (out / "bench.md").read_text()
    assert random_weights.RANDOM_WEIGHTS in text and "| onnxruntime-cpu | fp32 | cpu | numpy | 1 | audio -> logits |" in text


@pytest.mark.parametrize("args, message", [
    (["--backend", "onnxruntime-cpu,nope"], "unknown backend 'nope'"),
    (["-o", "report.txt"], "--output writes .json or .md"),
    (["--model", "x.safetensors", "--size", "tiny"], "--size and --frames shape the random model"),
])
def test_bench_user_errors_are_one_line(args, message):
    done = cli("bench", *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


@pytest.mark.parametrize("kwargs, message", [
    (dict(batches="1,x"), "--batch expects positive integers"),
    (dict(iters=3, seconds=2.0), "either --iters or --seconds"),
    (dict(model="/nonexistent/model"), "does not exist"),
    (dict(size="huge"), "unknown model size 'huge'"),
    (dict(precision="int4"), "precision must be one of"),
])
def test_benchmark_checks_its_options_before_any_work(kwargs, message):
    with pytest.raises(UserError, match=message):
        bench.benchmark(**{"backends": "onnxruntime-cpu", **kwargs})


def test_machine_lines_name_the_gpu_clocks_and_power_mode():
    header = {"cpu": "ARMv8 Processor rev 1 (v8l)", "cores": 6, "machine": "aarch64", "python": "3.10.12",
              "date": "2026-11-25T00:00:00+00:00", "packages": {"numpy": "1.26.4"}, "runtimes": {"tensorrt": "10.3.0"},
              "gpu": {"devices": [{"index": 0, "name": "Orin", "compute_capability": "8.7"}], "driver": "12.6",
                      "error": None, "nvidia_smi": {"gpus": [{"index": "0", "clocks.sm": "1020 MHz",
                                                              "clocks.max.sm": "1020 MHz", "clocks.mem": "3199 MHz",
                                                              "clocks.max.mem": "3199 MHz", "pstate": "P0"}]}},
              "jetson": {"l4t": "# R36 (release), REVISION: 4.3", "power_mode": "MAXN_SUPER", "clocks_locked": True},
              "threads": {"usable_cpus": 6, "env": {}}}
    text = "\n".join(bench_report.machine_lines(header))
    assert "Orin (sm 8.7), driver 12.6; clocks SM 1020 MHz / max 1020 MHz" in text
    assert "power mode MAXN_SUPER; clocks locked (jetson_clocks)" in text and "tensorrt 10.3.0" in text


def test_round_robin_calls_every_contender_each_round_and_pauses_between_turns(monkeypatch):
    order, sleeps = [], []
    monkeypatch.setattr(timing.time, "sleep", lambda seconds: sleeps.append(seconds))
    calls = {(name, stage): (lambda key=(name, stage): order.append(key))
             for name in ("a", "b") for stage in ("model", "e2e")}
    times = timing.round_robin(calls, 3, warmup=1, pause_ms=20, turn=lambda key: key[0])
    assert order == list(calls) * 4  # one warm-up round, then three timed rounds in the same order
    assert {key: len(v) for key, v in times.items()} == {key: 3 for key in calls}
    assert sleeps == [0.02] * 6  # one pause per contender's turn, not per call


def test_stream_latency_adds_the_capture_buffer_to_each_hops_work():
    from astedge.features.fbank import FbankConfig
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    class Slow:
        name, task, labels, frame_layout = "slow", "multilabel", ("a", "b"), None
        feature_config = FbankConfig(target_length=128)

        def run(self, x):
            import time as clock

            clock.sleep(0.004)  # 4 ms of "inference"
            return np.zeros((len(x), 2), np.float32)

    options = ClassifierOptions(window=1.0, hop=0.25, smoothing="median", smoothing_windows=3)
    report = bench.stream_latency(Classifier(Slow(), options), block_ms=20.0, hops=8, warmup=1)
    assert report["incremental_features"] and report["hops"] == 8 and report["capture_buffer_ms"] == 20.0
    assert report["inference_ms"]["p50"] >= 4.0 and report["decision_ms"]["p50"] >= 0  # its speed: astedge bench
    assert report["mic_to_decision_ms"]["p50"] >= 20.0 + 4.0 + report["features_ms"]["p50"] * 0.5
    assert report["mean_wait_for_window_end_ms"] == 125.0
