"""The benchmark's accounting of the stand-in API server's CPU: other threads counted, the measuring one not."""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlsplit

import pytest

from bench.stats import OtherThreadsCpu
from lab.fakeapi import FakeApiServer

BURN = 0.3  # CPU seconds each side burns


def burn(seconds: float) -> None:
    """Spin until this thread has used `seconds` of CPU."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_cpu_of_other_threads_is_counted_and_the_measuring_thread_s_is_not() -> None:
    meter = OtherThreadsCpu()
    worker = threading.Thread(target=burn, args=(BURN,), name="fakeapi-test-burner")
    worker.start()
    burn(BURN)  # the measuring thread's own work (polling FRR, in the benchmark)
    worker.join()  # an exited thread's time is still counted
    measured = meter.seconds()
    assert BURN * 0.9 <= measured <= BURN * 1.5, measured
    assert meter.foreign() == []


def test_threads_that_are_not_the_stand_in_s_are_named() -> None:
    meter = OtherThreadsCpu()
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="someone-else")
    worker.start()
    try:
        assert meter.foreign() == ["someone-else"]
    finally:
        stop.set()
        worker.join()


def test_the_stand_in_s_connection_threads_are_its_own() -> None:
    with FakeApiServer() as api:
        meter = OtherThreadsCpu()
        stop = threading.Event()
        opened: list[object] = []

        def watch() -> None:  # a watch keeps its connection thread alive on the server
            address = urlsplit(api.url)
            connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
            try:
                connection.request("GET", "/api/v1/services?watch=1&timeoutSeconds=5")
                opened.append(connection.getresponse())
                stop.wait(5)
            finally:
                connection.close()

        client = threading.Thread(target=watch, name="fakeapi-test-client")
        client.start()
        try:
            deadline = time.monotonic() + 5
            while not any(t.name.endswith("(process_request_thread)") for t in threading.enumerate()):
                if time.monotonic() > deadline:
                    pytest.fail("the stand-in opened no connection thread")
                time.sleep(0.01)
            assert meter.foreign() == []
        finally:
            stop.set()
            client.join()


def test_reading_from_another_thread_is_refused() -> None:
    meter = OtherThreadsCpu()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            meter.seconds()
        except RuntimeError as error:
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    assert len(errors) == 1
