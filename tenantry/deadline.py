"""Request deadlines: each operation's time limit, kept by the event loop and by the handler thread.

An operation names its class in the spec (`x-timeout`: standard, batch or upload; Settings holds
each class's seconds). `tenantry.middleware.FlaskBridge` waits for the handler thread until the
deadline and then answers 504 GATEWAY_TIMEOUT itself. A thread cannot be stopped, so the two
sides agree through one `Deadline`: the thread claims the right to commit before it commits
(`claim_commit`), and the loop may answer 504 only while nobody has claimed it (`expire`). So
a request answered 504 never commits, and one that committed is never answered 504.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

from tenantry.errors import DeadlineExceeded

_RUNNING, _COMMITTING, _EXPIRED = "running", "committing", "expired"


class Deadline:
    """The monotonic time by which a request must be answered, shared by the loop and its thread."""

    def __init__(self, seconds: float, start: float | None = None) -> None:
        self.seconds = seconds
        self.at = (time.monotonic() if start is None else start) + seconds
        self._lock = threading.Lock()
        self._state = _RUNNING

    def remaining(self) -> float:
        """Returns the seconds left (negative once the deadline has passed)."""
        return self.at - time.monotonic()

    @property
    def expired(self) -> bool:
        """True once the loop answered 504, or the time is up and nothing claimed the commit."""
        return self._state == _EXPIRED or (self._state == _RUNNING and self.remaining() <= 0)

    def expire(self) -> bool:
        """The loop's side: marks the request as answered 504; False if the thread is already committing."""
        with self._lock:
            if self._state == _COMMITTING:
                return False
            self._state = _EXPIRED
            return True

    def check(self) -> None:
        """Raises DeadlineExceeded when the request is past its deadline (call between slow steps)."""
        if self.expired:
            raise DeadlineExceeded()

    def claim_commit(self) -> None:
        """The thread's side, just before COMMIT: raises DeadlineExceeded (so the transaction rolls
        back) when the time is up; otherwise the loop waits for this request's answer."""
        with self._lock:
            if self._state == _EXPIRED or self.remaining() <= 0:
                self._state = _EXPIRED
                raise DeadlineExceeded()
            self._state = _COMMITTING


_current: ContextVar[Deadline | None] = ContextVar("tenantry_deadline", default=None)


def install(deadline: Deadline | None) -> None:
    """Makes `deadline` the current request's (FlaskBridge sets it in the request's context)."""
    _current.set(deadline)


def current() -> Deadline | None:
    """Returns the current request's deadline, or None outside a request served by FlaskBridge."""
    return _current.get()


def check() -> None:
    """Raises DeadlineExceeded when the current request is past its deadline; else does nothing."""
    deadline = _current.get()
    if deadline is not None:
        deadline.check()


def claim_commit() -> None:
    """Claims the current request's commit (see Deadline.claim_commit); a no-op without a deadline."""
    deadline = _current.get()
    if deadline is not None:
        deadline.claim_commit()


def expired() -> bool:
    """True when the current request has a deadline and it has passed."""
    deadline = _current.get()
    return deadline is not None and deadline.expired
