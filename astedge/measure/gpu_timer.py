"""GPU compute time of a TensorRT engine for ``astedge bench``: CUDA timing events around each execution.

The runtime only offers the hook (:meth:`astedge.runtime.backends.tensorrt.EngineRunner.set_timer` takes any
:class:`~astedge.runtime.backends.tensorrt.ExecutionTimer`); the timer that measures with it lives on the bench's
side. Only the CUDA driver API (:mod:`astedge.features.cuda_driver`): no torch, no cuda-python.
"""

from __future__ import annotations

from astedge.features.cuda_driver import CudaError, Driver


class EngineEventTimer:
    """GPU compute time of the engine: timing events (driver API) recorded on the stream just before and after
    each ``execute_async_v3``. :meth:`take`, after ``run`` returned (it waits for the stream), sums the calls
    since the last take. A CUDA error turns the timer off (take returns None); benchmarks go on with wall time.
    While it is attached the pipelines run eagerly (no graphs), so that every execution is bracketed."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.events: list[int] = []
        self.free: list[int] = []
        self.used: list[tuple[int, int]] = []
        self.error: str | None = None
        self._start: int | None = None

    @classmethod
    def attach(cls, backend) -> "EngineEventTimer | None":
        """A timer for a backend that runs a TensorRT engine through the driver API, else None."""
        runner = getattr(backend, "runner", None)
        if runner is None or not isinstance(getattr(runner, "driver", None), Driver):
            return None
        timer = cls(runner.driver)
        runner.set_timer(timer)
        return timer

    def _event(self) -> int:
        if self.free:
            return self.free.pop()
        event = self.driver.event(timing=True)
        self.events.append(event)
        return event

    def start(self, stream: int) -> None:
        self._start = None
        if self.error:
            return
        try:
            self._start = self._event()
            self.driver.record(self._start, stream)
        except CudaError as err:
            self.error, self._start = str(err), None

    def stop(self, stream: int) -> None:
        if self._start is None or self.error:
            return
        try:
            end = self._event()
            self.driver.record(end, stream)
            self.used.append((self._start, end))
        except CudaError as err:
            self.error = str(err)

    def take(self) -> float | None:
        """Milliseconds of GPU compute since the last take (None if nothing ran or the timer failed)."""
        used, self.used = self.used, []
        total = 0.0
        for start, end in used:
            self.free += [start, end]
            if not self.error:
                try:
                    total += self.driver.elapsed_ms(start, end)
                except CudaError as err:
                    self.error = str(err)
        return None if self.error or not used else total

    def close(self) -> None:
        events, self.events, self.free, self.used = self.events, [], [], []
        for event in events:
            try:
                self.driver.destroy_event(event)
            except CudaError:
                pass
