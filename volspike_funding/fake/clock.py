"""A hand-driven clock pair for the daemon's ``clock``/``monotonic`` parameters: time moves only when a test says."""

from __future__ import annotations


class FakeClock:
    def __init__(self, wall: float = 1_791_382_993.0, mono: float = 1_000.0) -> None:
        self.wall = wall
        self.mono = mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Both clocks move together (use ``wall`` alone to model a stepped system clock)."""
        self.wall += seconds
        self.mono += seconds
