"""The GPU path without a GPU: the driver layer, CUDA graphs and the device-resident pipelines against CPU doubles
(tests/gpu_doubles.py: a recording libcuda, the kernel's own arithmetic from libastedge_fbank_host, a numpy
engine). What is checked: which buffers and stream each step uses and in what order, that features are never
copied between host and device (only audio in, logits out), that graphs are captured once and replayed, that
every resource is released on close and on failure, that work issued from another thread makes the context
current there, and that what reaches the engine is bit-identical to the model input of each window.

The real thing (``-m cuda``, at the end) runs the same pipelines on a GPU with the CUDA fbank library; it was
not run on a GPU when written (no GPU in the session).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from astedge.features import cuda_driver as cd
from astedge.features import cuda_fbank as C
from astedge.features import device_pipeline as dp
from astedge.features import fbank as F
from gpu_doubles import FakeCuda, HostKernel, NumpyEngine
from test_cuda_fbank import host_library  # noqa: F401 - the session fixture that builds libastedge_fbank_host

SMALL = F.FbankConfig(target_length=128)  # 1.28 s model input: 1 s windows are 98 frames + 30 pad rows


# --- the driver layer ------------------------------------------------------------------------------------


def test_driver_retains_the_primary_context_with_blocking_sync_and_reads_the_device():
    cuda = FakeCuda(name="Orin", cc=(8, 7), integrated=True)
    driver = cd.Driver(lib=cuda)
    assert cuda.primary_retained == 1 and cuda.primary_flags == cd.CU_CTX_SCHED_BLOCKING_SYNC
    assert driver.scheduling == "blocking-sync"
    info = driver.describe()
    assert (info["name"], info["compute_capability"], info["integrated"]) == ("Orin", "8.7", True)
    assert info["uuid"] == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f" and info["machine"]
    event = driver.event()
    assert cuda.events[event] == cd.CU_EVENT_BLOCKING_SYNC | cd.CU_EVENT_DISABLE_TIMING  # waits sleep
    assert cuda.events[driver.event(timing=True)] == cd.CU_EVENT_BLOCKING_SYNC
    driver.close()
    assert cuda.primary_retained == 0
    with pytest.raises(RuntimeError, match="released"):
        driver.activate()


def test_driver_keeps_working_when_the_context_flags_cannot_be_set():
    driver = cd.Driver(lib=FakeCuda(flags_status=cd.CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE))
    assert driver.scheduling.startswith("default (") and driver.alloc(16)  # waits still use blocking-sync events


def test_driver_makes_the_context_current_in_each_thread_that_uses_it():
    cuda = FakeCuda()
    driver = cd.Driver(lib=cuda)
    stream = driver.stream()
    done = []

    def worker():
        driver.activate()
        driver.synchronize(stream)
        done.append(True)

    thread = threading.Thread(target=worker, name="astedge-inference")
    thread.start()
    thread.join()
    assert done and ("cuCtxSetCurrent", "astedge-inference", FakeCuda.CONTEXT) in cuda.calls
    # Without activate() the double refuses work from a thread with no current context, as the driver does.
    error = []
    thread = threading.Thread(target=lambda: error.append(pytest.raises(cd.CudaError, driver.synchronize, stream)))
    thread.start()
    thread.join()
    assert "CUDA_ERROR_INVALID_CONTEXT" in str(error[0].value)


def test_driver_errors_name_the_call_and_the_status():
    cuda = FakeCuda()
    driver = cd.Driver(lib=cuda)
    cuda.fail["cuMemAlloc_v2"] = 2
    with pytest.raises(cd.CudaError, match=r"cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY \(2\)") as err:
        driver.alloc(1 << 30)
    assert err.value.status == 2 and err.value.call == "cuMemAlloc_v2"
    cuda.fail["cuMemHostGetDevicePointer_v2"] = 1
    with pytest.raises(cd.CudaError):
        driver.host_alloc(64, mapped=True)
    assert not cuda.pinned  # the pinned block of a failed mapping is freed


def test_unavailable_driver_says_why(monkeypatch):
    cuda = FakeCuda()
    cuda.fail["cuInit"] = 100
    with pytest.raises(cd.CudaUnavailable, match="cuInit failed"):
        cd.Driver(lib=cuda)


def test_resources_release_everything_even_when_one_release_fails():
    released = []

    def bad(x):
        released.append(x)
        raise cd.CudaError("cuMemFree_v2", 1, "CUDA_ERROR_INVALID_VALUE", "x")

    resources = cd.Resources()
    assert resources.add(released.append, "stream") == "stream"
    resources.add(bad, "buffer")
    resources.add(released.append, "event")
    with pytest.raises(cd.CudaError):
        resources.close()
    assert released == ["event", "buffer", "stream"] and len(resources) == 0


def test_host_array_is_a_numpy_view_of_pinned_memory():
    cuda = FakeCuda()
    driver = cd.Driver(lib=cuda)
    resources = cd.Resources()
    pinned = cd.HostArray(driver, resources, (2, 3), mapped=True)
    pinned.array[:] = 7.0
    assert pinned.device == pinned.host and cuda.pinned[pinned.host][1] == cd.CU_MEMHOSTALLOC_PORTABLE | 2
    assert np.ctypeslib.as_array((ctypes.c_float * 6).from_address(pinned.host)).tolist() == [7.0] * 6
    resources.close()
    assert not cuda.pinned


# --- graphs ---------------------------------------------------------------------------------------------


def _counting(cuda, stream, log):
    return lambda: cuda.submit(stream, "work", lambda: log.append(1))


def test_graphs_capture_on_the_second_use_and_replay_after():
    cuda = FakeCuda()
    driver = cd.Driver(lib=cuda)
    stream = driver.stream()
    graphs = dp.Graphs(driver, stream, limit=2)
    log = []
    work = _counting(cuda, stream, log)
    assert [graphs.run("a", work) for _ in range(4)] == ["eager", "capture", "replay", "replay"]
    assert len(log) == 4 and [w[3] for w in cuda.labels("work")] == [None, "graph", "graph", "graph"]
    assert graphs.run("b", work, ready=False) == "eager" and graphs.run("b", work, ready=False) == "eager"
    assert graphs.run("b", work) == "capture" and graphs.run("c", work) == "eager" and graphs.run("c", work) == "capture"
    assert list(graphs.executables) == ["b", "c"] and len(cuda.executables) == 2  # "a" evicted and destroyed
    assert graphs.run("a", work, ready=False) == "eager"  # known key, other shape last: eager, no replay
    assert not cuda.graphs  # graphs are destroyed once instantiated
    graphs.close()
    assert not cuda.executables


def test_a_failed_capture_ends_the_capture_and_runs_eagerly():
    cuda = FakeCuda()
    driver = cd.Driver(lib=cuda)
    stream = driver.stream()
    graphs = dp.Graphs(driver, stream)
    calls = []

    def work():
        calls.append(stream in cuda.capturing)
        if stream in cuda.capturing:
            raise RuntimeError("TensorRT execute_async_v3 failed (not capturable)")
        cuda.submit(stream, "work", lambda: None)

    assert graphs.run("k", work) == "eager"
    with pytest.warns(RuntimeWarning, match="graph capture failed, running eagerly"):
        assert graphs.run("k", work) == "eager" and "not capturable" in graphs.failed["k"]
    assert calls == [False, True, False] and not cuda.capturing and not cuda.graphs
    assert graphs.run("k", work) == "eager"  # not tried again
    cuda.fail["cuGraphInstantiateWithFlags"] = 1
    graphs2 = dp.Graphs(driver, stream)
    graphs2.run("j", lambda: None)
    with pytest.warns(RuntimeWarning):
        assert graphs2.run("j", lambda: None) == "eager" and "cuGraphInstantiateWithFlags" in graphs2.failed["j"]
    assert not cuda.graphs and not cuda.capturing


# --- files: audio in, logits out -------------------------------------------------------------------------


def _batch_pipeline(host_library, *, integrated=False, min_batch=1, max_batch=4, config=SMALL, graphs=True):
    cuda = FakeCuda(integrated=integrated)
    driver = cd.Driver(lib=cuda)
    kernel = HostKernel(cuda, C.HostFbank(config, model_input=True, library=host_library))
    engine = NumpyEngine(cuda, config.target_length, config.num_mel_bins, min_batch=min_batch, max_batch=max_batch)
    pipeline = dp.BatchPipeline(driver, engine, kernel, config, graphs=graphs)
    return cuda, engine, pipeline


def test_run_audio_writes_the_model_input_into_the_engine_binding_with_no_feature_copies(rng, host_library):
    cuda, engine, pipeline = _batch_pipeline(host_library)
    waves = (0.1 * rng.standard_normal((6, 16000))).astype(np.float32)
    tail = (0.1 * rng.standard_normal(9000)).astype(np.float32)
    logits = pipeline.run_audio([*waves, tail])
    reference = C.HostFbank(SMALL, library=host_library)
    expected = [reference(waves[:4]), reference(waves[4:]), reference(tail[None])]  # batches of <= 4, tail alone
    assert [x.shape[0] for x in engine.inputs] == [4, 2, 1]
    for seen, want in zip(engine.inputs, expected, strict=True):
        assert np.array_equal(seen, want)  # bit for bit: the kernel's own arithmetic, straight into the binding
    assert np.array_equal(logits, engine.logits(np.concatenate(expected)))
    # One stream; per batch: audio in, kernel, engine, logits out; the only D2H is the logits.
    streams = {w[1] for w in cuda.work}
    assert streams == {pipeline.stream}
    kinds = [w[0] for w in cuda.work if w[0] != "record"]
    assert kinds == ["H2D", "fbank", "engine", "D2H"] * 3
    assert [w[2] for w in cuda.labels("H2D")] == [4 * 16000 * 4, 2 * 16000 * 4, 9000 * 4]  # audio only
    assert [w[2] for w in cuda.labels("D2H")] == [4 * 5 * 4, 2 * 5 * 4, 1 * 5 * 4]  # logits only
    # Every wait is an event record + blocking-sync event wait, after the logits copy.
    assert [c[0] for c in cuda.calls if c[0] in ("cuEventSynchronize", "cuStreamSynchronize")] == ["cuEventSynchronize"] * 3
    pipeline.close()
    assert cuda.live() == {}


def test_repeated_batches_replay_one_graph(rng, host_library):
    cuda, engine, pipeline = _batch_pipeline(host_library)
    waves = (0.1 * rng.standard_normal((3, 4, 16000))).astype(np.float32)
    outs = [pipeline.run_audio(w) for w in waves]
    assert pipeline.graphs.counts == {"eager": 1, "capture": 1, "replay": 1}
    graph = [w[0] for w in cuda.work if w[3] == "graph"]
    assert graph == ["H2D", "fbank", "engine", "D2H"] * 2  # captured once (then launched), replayed once
    for w, out in zip(waves, outs, strict=True):
        assert np.array_equal(out, engine.logits(C.HostFbank(SMALL, library=host_library)(w)))
    before, binds = len(cuda.calls), engine.binds
    pipeline.run_audio(waves[0])  # steady state: four driver calls per batch, no TensorRT call but the replay
    assert [c[0] for c in cuda.calls[before:]] == ["cuCtxGetCurrent", "cuGraphLaunch", "cuEventRecord",
                                                   "cuEventSynchronize"]
    assert engine.binds == binds == 1
    pipeline.close()
    assert cuda.live() == {}


def test_integrated_gpu_uses_mapped_pinned_memory_and_copies_nothing(rng, host_library):
    cuda, engine, pipeline = _batch_pipeline(host_library, integrated=True)
    waves = (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)
    logits = pipeline.run_audio(waves)
    assert not cuda.labels("H2D") and not cuda.labels("D2H")
    assert all(flags == cd.CU_MEMHOSTALLOC_PORTABLE | cd.CU_MEMHOSTALLOC_DEVICEMAP for _, flags in cuda.pinned.values())
    assert np.array_equal(logits, engine.logits(C.HostFbank(SMALL, library=host_library)(waves)))
    features = pipeline.run_features(C.HostFbank(SMALL, library=host_library)(waves))
    assert np.array_equal(features, logits) and not cuda.labels("H2D")
    pipeline.close()
    assert cuda.live() == {}


def test_run_features_pads_to_the_engines_minimum_batch(rng, host_library):
    cuda, engine, pipeline = _batch_pipeline(host_library, min_batch=2)
    x = rng.standard_normal((5, 128, 128)).astype(np.float32)
    logits = pipeline.run_features(x)
    assert np.array_equal(logits, engine.logits(x))
    assert [i.shape[0] for i in engine.inputs] == [4, 2]  # 5 = 4 + 1 padded to 2
    assert np.array_equal(engine.inputs[1][1], np.zeros((128, 128), np.float32))
    assert [w[2] for w in cuda.labels("H2D")] == [4 * 128 * 128 * 4, 2 * 128 * 128 * 4]
    pipeline.close()


def test_pipeline_from_another_thread_makes_the_context_current_there(rng, host_library):
    cuda, engine, pipeline = _batch_pipeline(host_library)
    wave = (0.1 * rng.standard_normal((1, 16000))).astype(np.float32)
    results = []
    thread = threading.Thread(target=lambda: results.append(pipeline.run_audio(wave)), name="astedge-inference")
    thread.start()
    thread.join()
    assert results and ("cuCtxSetCurrent", "astedge-inference", FakeCuda.CONTEXT) in cuda.calls
    pipeline.close()


def test_construction_that_fails_part_way_releases_what_it_had(host_library):
    for failing in ("cuMemAlloc_v2", "cuMemHostAlloc", "cuEventCreate"):
        cuda = FakeCuda()
        driver = cd.Driver(lib=cuda)
        engine = NumpyEngine(cuda, 128, 128)
        cuda.fail[failing] = 2
        with pytest.raises(cd.CudaError, match=failing):
            dp.BatchPipeline(driver, engine, None, SMALL)
        assert cuda.live() == {}, failing


def test_close_releases_everything_even_when_a_free_fails(rng, host_library):
    cuda, engine, pipeline = _batch_pipeline(host_library)
    pipeline.run_audio((0.1 * rng.standard_normal((2, 16000))).astype(np.float32))
    cuda.fail["cuMemFree_v2"] = 1
    with pytest.raises(cd.CudaError, match="cuMemFree_v2"):
        pipeline.close()
    assert set(cuda.live()) == {"memory"}  # only what could not be freed: streams, events, pinned, graphs went
    pipeline.close()  # closing twice is a no-op


# --- streams: the window on the device -------------------------------------------------------------------


def _windows(total, window, hop, drops=(), partial=False):
    """(start, end) of stream windows like astedge.runtime.stream.Listener makes them (minus timing)."""
    ends, end = [], window
    if partial:
        end = hop
        while end < window:
            ends.append(end)
            end += hop
    while end <= total:
        ends.append(end)
        end += hop
    spans = [(max(0, e - window), e) for i, e in enumerate(ends) if i not in drops]
    if total - ends[-1] >= 160:  # the tail window: the next window's start, cut at the end of the audio
        spans.append((ends[-1] + hop - window, total))
    return spans


def test_plan_window_reuses_frames_on_the_grid_and_restarts_otherwise():
    cfg = F.DEFAULT
    state = dp.StreamState()
    step, state = dp.plan_window(state, 0, 160000, cfg)
    assert step.restart and (step.keep, step.audio, step.row, step.frames, step.pad) == (None, (0, 159920), 0, 998, None)
    step, state = dp.plan_window(state, 16000, 176000, cfg)  # 1 s hop: 100 new frames, 898 kept
    assert not step.restart and step.keep == (100, 898) and (step.row, step.frames) == (898, 100)
    assert step.audio == (998 * 160, 1097 * 160 + 400) and step.pad is None
    again, _ = dp.plan_window(state, 32000, 192000, cfg)
    assert again.key == step.key  # the steady state is one graph
    tail, state = dp.plan_window(state, 32000, 190000, cfg)  # a shorter tail window: rows 986.. become pad
    assert tail.keep == (100, 898) and tail.frames == 88 and tail.pad == (986, 998)
    jump, state = dp.plan_window(state, 400000, 560000, cfg)  # dropped windows: nothing to reuse
    assert jump.restart and jump.audio == (400000, 559920)  # only samples that make frames
    off, _ = dp.plan_window(state, 400080, 560080, cfg)  # half a frame later: off the grid
    assert off.restart
    grow = dp.StreamState()
    step, grow = dp.plan_window(grow, 0, 8000, cfg)  # partial windows growing at the start
    step, grow = dp.plan_window(grow, 0, 16000, cfg)
    assert step.keep is None and (step.row, step.frames) == (48, 50) and not step.restart  # already in place
    with pytest.raises(ValueError):
        dp.plan_window(dp.StreamState(), 0, 200000, cfg)  # longer than the model's input


def _stream_pipeline(host_library, integrated=False, graphs=True):
    cuda = FakeCuda(integrated=integrated)
    driver = cd.Driver(lib=cuda)
    kernel = HostKernel(cuda, C.HostFbank(SMALL, model_input=False, normalize=True, library=host_library))
    engine = NumpyEngine(cuda, SMALL.target_length, SMALL.num_mel_bins, max_batch=1)
    return cuda, engine, dp.StreamPipeline(driver, engine, kernel, SMALL, graphs=graphs)


@pytest.mark.parametrize("case", ["hop-aligned", "partial-drops-tail", "hop-off-grid", "integrated"])
def test_stream_windows_reach_the_engine_bit_identical_to_their_model_input(case, rng, host_library):
    cuda, engine, pipeline = _stream_pipeline(host_library, integrated=case == "integrated")
    stream = (0.1 * rng.standard_normal(16000 * 6 + 5000)).astype(np.float32)
    hop = 4000 if case != "hop-off-grid" else 4100
    windows = _windows(len(stream), 16000, hop, drops={9, 10, 11} if case == "partial-drops-tail" else (),
                       partial=case == "partial-drops-tail")
    read_sizes = []

    def read(a, b):
        read_sizes.append(4 * (b - a))
        return stream[a:b].copy()

    reference = C.HostFbank(SMALL, library=host_library)
    calls_per_window = []
    for start, end in windows:
        before = len(cuda.calls)
        logits = pipeline.classify(read, start, end)
        calls_per_window.append([c[0] for c in cuda.calls[before:]])
        want = reference(stream[start:end])
        assert np.array_equal(engine.inputs[-1][0], want), (start, end)
        assert np.array_equal(logits, engine.logits(want[None])[0])
    assert all(w[2] == 5 * 4 for w in cuda.labels("D2H"))  # logits only, never features
    if case != "integrated":
        assert [w[2] for w in cuda.labels("H2D")] == read_sizes  # the audio each window read, nothing else
    if case == "hop-aligned":
        assert pipeline.steps == {"restart": 1, "slide": len(windows) - 1}
        assert pipeline.frames_computed == F.num_frames(windows[-1][1])  # each frame computed once
        assert pipeline.graphs.counts["replay"] >= len(windows) - 4
        graph = [w[0] for w in cuda.work if w[3] == "graph"][:6]
        assert graph == ["D2D", "D2D", "H2D", "fbank", "engine", "D2H"]
        steady = calls_per_window[-2]  # the last full window: a replay of the steady hop's graph
        assert steady == ["cuCtxGetCurrent", "cuGraphLaunch", "cuEventRecord", "cuEventSynchronize"]
    if case == "hop-off-grid":
        assert pipeline.steps == {"restart": len(windows)}
    if case == "integrated":
        assert not cuda.labels("H2D") and not cuda.labels("D2H")
    pipeline.close()
    assert cuda.live() == {}


def test_stream_window_whose_audio_is_gone_is_recomputed_or_lost(rng, host_library):
    cuda, engine, pipeline = _stream_pipeline(host_library)
    stream = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    reference = C.HostFbank(SMALL, library=host_library)
    assert pipeline.classify(lambda a, b: stream[a:b], 0, 16000) is not None
    gone_before = 20000  # the ring overwrote samples before this one
    read = lambda a, b: stream[a:b] if a >= gone_before else None  # noqa: E731
    pipeline.classify(read, 4000, 20000)  # needs samples from 15680: gone -> recomputed from [4000, 20000)? also gone
    assert pipeline.steps["restart"] == 1 and len(engine.inputs) == 1  # lost: nothing ran
    assert pipeline.classify(read, 24000, 40000) is not None
    assert np.array_equal(engine.inputs[-1][0], reference(stream[24000:40000]))
    pipeline.close()


# --- astedge bench's GPU compute time: timing events around execute_async_v3 (driver API) ------------------


class _Context:
    """The few IExecutionContext calls ContextEngine makes, with execute_async_v3 as stream work on a FakeCuda."""

    def __init__(self, cuda):
        self.cuda, self.calls = cuda, []

    def set_input_shape(self, name, shape):
        self.calls.append(("set_input_shape", name, shape))
        return True

    def set_tensor_address(self, name, address):
        self.calls.append(("set_tensor_address", name))
        return True

    def execute_async_v3(self, stream):
        self.cuda.submit(stream, "engine", lambda: None)
        return True


def test_engine_event_timer_brackets_each_execute_with_timing_events():
    import types

    from astedge.measure.gpu_timer import EngineEventTimer
    from astedge.runtime.backends import tensorrt as trt_backend

    cuda = FakeCuda()
    driver = cd.Driver(lib=cuda)
    stream = driver.stream()
    runner = types.SimpleNamespace(driver=driver, timer=None, input_name="fbank", output_name="logits",
                                   input_shape=(128, 128), num_outputs=5)
    runner.set_timer = lambda timer: setattr(runner, "timer", timer)
    timer = EngineEventTimer.attach(types.SimpleNamespace(runner=runner))
    assert timer is not None and runner.timer is timer
    engine = trt_backend.ContextEngine(runner, _Context(cuda), 0, 1, 4)
    engine.bind(2, 0x10, 0x20, stream)
    for _ in range(2):  # two executions in one run()
        engine.enqueue(stream)
    kinds = [w[0] for w in cuda.work]
    assert kinds == ["record", "engine", "record"] * 2 and {w[1] for w in cuda.work} == {stream}
    assert all(cuda.events[e] == cd.CU_EVENT_BLOCKING_SYNC for e in timer.events)  # timing on, waits still sleep
    assert timer.take() == pytest.approx(0.5) and timer.take() is None  # 0.25 ms per execute (the double)
    engine.enqueue(stream)
    assert timer.take() == pytest.approx(0.25) and len(timer.events) == 4  # events are reused
    cuda.fail["cuEventRecord"] = 1  # a CUDA error turns the timer off; executions go on
    engine.enqueue(stream)
    assert timer.take() is None and timer.error
    del cuda.fail["cuEventRecord"]
    timer.close()
    assert not cuda.events
    assert EngineEventTimer.attach(types.SimpleNamespace()) is None  # no TensorRT runner: no timer


# --- the runtime's hooks: classify (windows.window_logits) and listen (stream.Listener) -------------------


class _Backend:
    """A backend double: logits of a NumpyEngine; with `device`, also the device hooks (run_audio, open_stream) on a
    FakeCuda, as astedge.runtime.backends.tensorrt offers them."""

    name, precision, device, task = "double", "fp32", "cuda", "multiclass"
    frame_layout = None

    def __init__(self, host_library, config, device: bool):
        self.labels, self.feature_config = tuple(f"c{i}" for i in range(5)), config
        self.cuda = FakeCuda()
        self.driver = cd.Driver(lib=self.cuda)
        self.engine = NumpyEngine(self.cuda, config.target_length, config.num_mel_bins)
        self.sessions = []
        if device:
            model = HostKernel(self.cuda, C.HostFbank(config, library=host_library))
            self.frames = HostKernel(self.cuda, C.HostFbank(config, model_input=False, normalize=True, library=host_library))
            self.batch = dp.BatchPipeline(self.driver, self.engine, model, config)
            self.run_audio = self.batch.run_audio
            self.run_audio_frames = self._no_frames
            self.open_stream = self._open_stream

    def _no_frames(self, waves):
        raise AssertionError("a model without a frame head is never asked for frames")

    def _open_stream(self, windowing):
        engine = NumpyEngine(self.cuda, self.feature_config.target_length, self.feature_config.num_mel_bins, max_batch=1)
        self.sessions.append(dp.StreamPipeline(self.driver, engine, self.frames, self.feature_config))
        return self.sessions[-1]

    def run(self, x):
        return self.engine.logits(np.asarray(x, np.float32))

    def close(self):
        pass


def test_classify_prefers_the_device_path_and_gives_the_same_logits(rng, host_library):
    from astedge.runtime.windows import Windowing, classify_waveform

    wave = (0.1 * rng.standard_normal(16000 * 4 + 3000)).astype(np.float32)
    windowing = Windowing.from_seconds(SMALL, 1.0, 0.25)
    raw = C.HostFbank(SMALL, model_input=False, library=host_library)  # the kernel's frames, normalized in numpy
    host = classify_waveform(_Backend(host_library, SMALL, False), wave, windowing, extractor=raw, batch_size=4)
    device_backend = _Backend(host_library, SMALL, True)
    device = classify_waveform(device_backend, wave, windowing, batch_size=4)
    assert [(w.start, w.end) for w in device.windows] == [(w.start, w.end) for w in host.windows]
    assert all(np.array_equal(d.logits, h.logits) for d, h in zip(device.windows, host.windows, strict=True))
    # 13 full windows and a 15000-sample tail in batches of 4: the last batch is [full] + [tail] (equal lengths go
    # together). Audio goes in, logits come out; nothing else crosses.
    assert [w[2] for w in device_backend.cuda.labels("H2D")] == [4 * 16000 * 4] * 3 + [16000 * 4, 15000 * 4]
    assert [w[2] for w in device_backend.cuda.labels("D2H")] == [4 * 5 * 4] * 3 + [5 * 4, 5 * 4]


def test_classify_tail_shorter_than_a_frame_is_all_padding_on_both_paths(rng, host_library):
    from astedge.runtime.windows import Windowing, classify_waveform

    wave = (0.1 * rng.standard_normal(16000 * 2 + 200)).astype(np.float32)  # hop = window: a 200-sample tail
    windowing = Windowing.from_seconds(SMALL, 1.0, 1.0)
    raw = C.HostFbank(SMALL, model_input=False, library=host_library)
    host = classify_waveform(_Backend(host_library, SMALL, False), wave, windowing, extractor=raw)
    backend = _Backend(host_library, SMALL, True)
    device = classify_waveform(backend, wave, windowing)
    assert len(device.windows) == 3 and device.windows[-1].end - device.windows[-1].start == pytest.approx(200 / 16000)
    assert all(np.array_equal(d.logits, h.logits) for d, h in zip(device.windows, host.windows, strict=True))
    assert np.all(backend.engine.inputs[-1] == np.float32(SMALL.pad_value))


def test_listener_runs_windows_on_the_device_in_its_inference_thread(rng, host_library, tmp_path):
    import soundfile as sf

    from astedge.audio import capture
    from astedge.runtime.stream import Listener
    from astedge.runtime.windows import Windowing, classify_waveform

    wave = (0.1 * rng.standard_normal(16000 * 3 + 2000)).astype(np.float32)
    path = tmp_path / "stream.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    windowing = Windowing.from_seconds(SMALL, 1.0, 0.25)
    backend = _Backend(host_library, SMALL, True)
    with Listener(backend, capture.FileSource(path), windowing) as listener:
        results = list(listener.results())
        summary = listener.summary()
    raw = C.HostFbank(SMALL, model_input=False, library=host_library)
    batch = classify_waveform(_Backend(host_library, SMALL, False), wave, windowing, extractor=raw)
    assert [(r.start, r.end) for r in results] == [(w.start, w.end) for w in batch.windows]
    assert all(np.array_equal(r.logits, w.logits) for r, w in zip(results, batch.windows, strict=True))
    assert summary["frames_computed"] == F.num_frames(len(wave))  # each frame once, on the device
    threads = {c[1] for c in backend.cuda.calls if c[0] == "cuCtxSetCurrent"}
    assert "astedge-inference" in threads  # the listener's thread made the context current before its first window
    assert backend.sessions[0].closed and backend.sessions[0].graphs.counts["replay"] > 0


# --- the real GPU ----------------------------------------------------------------------------------------


#: The CUDA fbank vs its host build, every cell of the model input (normalized units): built with -fmad=false, only
#: the device's logf may differ from glibc's, by an ulp or two; 1e-5 (9e-5 log-mel) leaves room for that and is far
#: below the host build's own bound against numpy (2.4e-4 log-mel).
GPU_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def gpu():
    try:
        driver = cd.shared_driver()
        kernel = C.CudaFbank(SMALL)
    except (cd.CudaUnavailable, C.CudaFbankUnavailable) as err:
        pytest.skip(f"no GPU path here: {err}")
    yield driver, kernel
    kernel.close()


class _DeviceEngine:
    """A stand-in engine on the real GPU: copies its whole input binding to its output (one D2D copy a clip), so
    every cell the CUDA fbank wrote into the binding is checked through the "logits", without TensorRT."""

    def __init__(self, driver, frames, bins, max_batch=4):
        self.driver, self.frames, self.bins, self.classes = driver, frames, bins, frames * bins
        self.min_batch, self.max_batch = 1, max_batch

    def bind(self, batch, input_ptr, output_ptr, stream):
        self.bound = (batch, input_ptr, output_ptr)

    def enqueue(self, stream):
        batch, source, target = self.bound
        for b in range(batch):
            self.driver.copy_device(target + b * self.classes * 4, source + b * self.frames * self.bins * 4,
                                    self.classes * 4, stream)


@pytest.mark.cuda
def test_gpu_batch_pipeline_runs_graphs_on_the_device(gpu, rng, host_library):
    driver, kernel = gpu
    engine = _DeviceEngine(driver, SMALL.target_length, SMALL.num_mel_bins)
    pipeline = dp.BatchPipeline(driver, engine, kernel, SMALL)
    reference = C.HostFbank(SMALL, library=host_library)
    for _ in range(3):
        waves = (0.1 * rng.standard_normal((4, 16000))).astype(np.float32)
        logits = pipeline.run_audio(waves).reshape(len(waves), SMALL.target_length, SMALL.num_mel_bins)
        assert np.abs(logits - reference(waves)).max() <= GPU_TOLERANCE
    assert pipeline.graphs.counts == {"eager": 1, "capture": 1, "replay": 1}
    pipeline.close()


@pytest.mark.cuda
def test_gpu_stream_pipeline_matches_the_host_build(gpu, rng, host_library):
    driver, _ = gpu
    frames = C.CudaFbank(SMALL, model_input=False, normalize=True)
    engine = _DeviceEngine(driver, SMALL.target_length, SMALL.num_mel_bins, max_batch=1)
    pipeline = dp.StreamPipeline(driver, engine, frames, SMALL)
    stream = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
    reference = C.HostFbank(SMALL, library=host_library)
    for start, end in _windows(len(stream), 16000, 4000):
        logits = pipeline.classify(lambda a, b: stream[a:b], start, end).reshape(SMALL.target_length, -1)
        assert np.abs(logits - reference(stream[start:end])[0]).max() <= GPU_TOLERANCE
    assert pipeline.graphs.counts["replay"] > 0
    pipeline.close()
    frames.close()
