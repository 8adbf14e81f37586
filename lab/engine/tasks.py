"""Background work: delayed jobs (the engine's async commands) and periodic monitors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Tasks:
    """Runs jobs on a thread pool; `stop()` wakes sleeping jobs and joins everything."""

    def __init__(self, workers: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine-job")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def later(self, delay_s: float, job: Callable[[], None]) -> None:
        """Run `job` after `delay_s` seconds (skipped if stopping by then)."""
        if self._stop.is_set():
            return
        self._pool.submit(self._run, delay_s, job)

    def every(self, interval_s: float, job: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=self._loop, args=(interval_s, job), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def sleep(self, seconds: float) -> bool:
        """Sleep inside a job; False when the engine is stopping."""
        return not self._stop.wait(seconds)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, delay_s: float, job: Callable[[], None]) -> None:
        if self._stop.wait(delay_s):
            return
        try:
            job()
        except Exception:
            log.exception("engine job failed")

    def _loop(self, interval_s: float, job: Callable[[], None]) -> None:
        while not self._stop.wait(interval_s):
            try:
                job()
            except Exception:
                log.exception("engine monitor failed")
