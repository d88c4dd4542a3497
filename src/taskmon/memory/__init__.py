"""In-process adapters of the ports: correct for one worker, and the fallback when Redis is gone."""

from taskmon.memory.hub import InMemoryEventHub
from taskmon.memory.monitor import InMemoryTaskMonitor
from taskmon.memory.semaphore import InMemorySemaphore

__all__ = ["InMemoryEventHub", "InMemorySemaphore", "InMemoryTaskMonitor"]
