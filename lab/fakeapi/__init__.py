"""Stand-in Kubernetes API server serving Services and EndpointSlices over real HTTP, with fault injection."""

from lab.fakeapi.cli import main
from lab.fakeapi.server import FakeApiServer

__all__ = ["FakeApiServer", "main"]
