"""Where the rate-limit counters live: a table in memory shared by one host's worker processes, or Redis.

`SharedCounters` is a `limits` storage over a fixed-size table in a memory-mapped file. The
`tenantry serve` parent creates the file before it starts its workers (`create_table`) and names
it to them in `TABLE_ENV`; every worker maps the same file, so all of them count in one place and
a limit holds whichever worker answers. Without that variable (one worker, or a process built
another way) the table is anonymous memory of the process's own.

Each limit's key takes one 48-byte slot: a 16-byte digest of the key (keyed with the table's own
random secret, so nobody outside can pick keys that land in one bucket), the start of its current
window, the window's length, and the counts of the previous and the current window (the sliding
window counter, as the Redis storage keeps it: a key's first window starts at its first hit, and
the previous window's count weighs by the share of it the sliding window still covers). A slot
is found in its bucket of eight by one `find` of the digest; a slot whose windows have both
passed is free again, and when a bucket is full the slot nearest its end is taken (that key
starts counting afresh, and a warning says the table is too small). Every operation holds a
process-wide thread lock and an exclusive `flock` on the file for a few microseconds: no reader
sees half an update, and a process that dies holding the lock releases it with its descriptor.

`BreakerRedisStorage` is limits' Redis storage behind a circuit breaker (`Breaker`): when Redis
fails or times out, the breaker stops asking it for `TENANTRY_REDIS_RETRY_AFTER` seconds, then
lets one request try it again. Meanwhile every call fails at once with `CounterStoreUnavailable`
and the limiter fails open. The breaker logs a warning when it opens and an info line when it
closes, nothing per request.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from limits.storage import RedisStorage, SlidingWindowCounterSupport, Storage

log = logging.getLogger("tenantry.limits")

#: The environment variable naming the shared table to the worker processes (set by `tenantry serve`).
TABLE_ENV = "TENANTRY_RATE_LIMIT_TABLE"

_MAGIC = b"TNTYRLT2"
_HEADER = struct.Struct("<8sQQ16s")  # magic, slots, slot size, the digest's secret key
_HEADER_SIZE = 64
_SLOT = struct.Struct("<16sddqq")  # key digest, current window start, window length, previous count, current count
_SLOT_SIZE = _SLOT.size  # 48
_VALUES = struct.Struct("<ddqq")
_BUCKET = 8  # slots searched for a key: one find() over 384 bytes
_EVICTION_WARNING_SECONDS = 60.0

T = TypeVar("T")


def table_size(slots: int) -> int:
    """Returns the bytes a table of `slots` slots takes (header included)."""
    return _HEADER_SIZE + _buckets(slots) * _BUCKET * _SLOT_SIZE


def _buckets(slots: int) -> int:
    return max(1, slots // _BUCKET)


_PREFIX = "tenantry-ratelimits-"


def create_table(slots: int, directory: str | None = None) -> Path:
    """Creates an empty shared table of `slots` slots and returns its path; raises OSError when it cannot.

    The file goes to /dev/shm when there is one (memory, never written back to a disk), else to the
    temporary directory, named with the creating process's id. The caller removes it when the
    processes using it are done; the tables of creators that died without removing theirs (killed)
    are removed here.
    """
    if directory is None:
        shm = Path("/dev/shm")  # noqa: S108 - memory-backed, and the file is created mode 0600 by mkstemp
        directory = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()
    _remove_orphans(Path(directory))
    fd, name = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=directory)
    try:
        os.ftruncate(fd, table_size(slots))
        os.pwrite(fd, _HEADER.pack(_MAGIC, _buckets(slots) * _BUCKET, _SLOT_SIZE, secrets.token_bytes(16)), 0)
    except OSError:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def _remove_orphans(directory: Path) -> None:
    """Removes the tables in `directory` whose creating process is gone."""
    for path in directory.glob(f"{_PREFIX}*-*"):
        pid = path.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:  # alive under another user, or not ours to judge
            continue


class SharedCounters(Storage, SlidingWindowCounterSupport):
    """limits' sliding-window-counter storage over a table shared by one host's processes (module docstring).

    `path`: a table made by `create_table` (default: `$TENANTRY_RATE_LIMIT_TABLE`); empty or unset:
    memory of this process's own, of `slots` slots.
    """

    # Registers the scheme with limits (which declares it an instance variable, hence no ClassVar).
    STORAGE_SCHEME = ["tenantry-shared"]  # noqa: RUF012

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        path: str | None = None,
        slots: int = 131072,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._path = (path if path is not None else os.environ.get(TABLE_ENV)) or None  # "": anonymous
        self._slots = slots
        self._clock = clock
        self._lock = threading.Lock()
        self._evicted = 0
        self._evictions_logged = 0.0
        self._open()

    @property
    def shared(self) -> bool:
        """True when the table is a file other processes map too."""
        return self._fd is not None

    def _open(self) -> None:
        self._pid = os.getpid()
        self._fd: int | None = None
        if self._path is not None:
            try:
                self._open_file(self._path)
                return
            except OSError as exc:  # fail open as for any counter store: count, if only in this process
                log.warning("rate-limit table %s unusable (%s): this process counts alone", self._path, exc)
        self._map = mmap.mmap(-1, table_size(self._slots))
        self._secret = secrets.token_bytes(16)
        self._nbuckets = _buckets(self._slots)

    def _open_file(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            header = os.pread(fd, _HEADER.size, 0)
            if len(header) != _HEADER.size:
                raise OSError(f"{path} is not a rate-limit table")
            magic, slots, slot_size, secret = _HEADER.unpack(header)
            if magic != _MAGIC or slot_size != _SLOT_SIZE or os.fstat(fd).st_size != table_size(slots):
                raise OSError(f"{path} is not a rate-limit table of this version")
            self._map = mmap.mmap(fd, table_size(slots))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._secret = secret
        self._nbuckets = _buckets(slots)

    def _locked(self, operation: Callable[[], T]) -> T:
        if self._pid != os.getpid():  # a forked child shares the parent's descriptor, and with it the flock
            if self._fd is not None:
                os.close(self._fd)
            self._open()
        with self._lock:
            if self._fd is None:
                return operation()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                return operation()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    # The table.

    def _digest(self, key: str) -> bytes:
        # Keyed with the table's secret: a client who knows (or chooses) the keys' names cannot pick
        # names that share a bucket with another's counter to evict it (its limit would restart).
        digest = hashlib.blake2b(key.encode(), digest_size=16, key=self._secret).digest()
        return digest if digest != bytes(16) else b"\x01" + digest[1:]  # all zeros marks a free slot

    def _find(self, digest: bytes) -> tuple[int, int | None]:
        """Returns (the bucket's offset, the key's slot offset or None)."""
        start = _HEADER_SIZE + (int.from_bytes(digest[:8], "little") % self._nbuckets) * _BUCKET * _SLOT_SIZE
        end = start + _BUCKET * _SLOT_SIZE
        at = self._map.find(digest, start, end)
        while at != -1 and (at - start) % _SLOT_SIZE:  # the bytes matched inside another slot's fields
            at = self._map.find(digest, at + 1, end)
        return start, (None if at == -1 else at)

    def _take(self, digest: bytes, bucket: int, now: float) -> int:
        """Returns a free or passed slot of the bucket for a new key; else the one nearest its end."""
        victim, victim_end = bucket, float("inf")
        for offset in range(bucket, bucket + _BUCKET * _SLOT_SIZE, _SLOT_SIZE):
            start, expiry = struct.unpack_from("<dd", self._map, offset + 16)
            end = start + 2 * expiry
            if expiry == 0 or end <= now:
                return offset
            if end < victim_end:
                victim, victim_end = offset, end
        self._evicted += 1
        if now - self._evictions_logged >= _EVICTION_WARNING_SECONDS:
            self._evictions_logged = now
            log.warning(
                "rate-limit table full: %d counters restarted so far; raise TENANTRY_RATE_LIMIT_SLOTS", self._evicted
            )
        return victim

    def _window(self, offset: int | None, expiry: float, now: float) -> tuple[float, int, int]:
        """Returns (current window start, previous count, current count) of a slot at `now`, windows shifted."""
        if offset is None:
            return now, 0, 0
        start, length, previous, current = _VALUES.unpack_from(self._map, offset + 16)
        if length != expiry or now >= start + 2 * length:  # another limit's slot, or both windows passed
            return now, 0, 0
        if now >= start + length:
            return start + length, current, 0
        return start, previous, current

    def _acquire(self, key: str, limit: int, expiry: int, amount: int) -> bool:
        now = self._clock()
        digest = self._digest(key)
        bucket, offset = self._find(digest)
        start, previous, current = self._window(offset, expiry, now)
        weighted = int(previous * (start + expiry - now) / expiry) + current
        if weighted + amount > limit:
            return False
        if offset is None:
            offset = self._take(digest, bucket, now)
        _SLOT.pack_into(self._map, offset, digest, start, float(expiry), previous, current + amount)
        return True

    def _sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = self._clock()
        _, offset = self._find(self._digest(key))
        start, previous, current = self._window(offset, expiry, now)
        if not (previous or current):
            return 0, 0.0, 0, 0.0
        return previous, (start + expiry - now) if previous else 0.0, current, start + 2 * expiry - now

    # limits' sliding window counter interface.

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Counts `amount` for `key` and returns True when the weighted count stays within `limit`; else False."""
        if amount > limit:
            return False
        return self._locked(lambda: self._acquire(key, limit, expiry, amount))

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """Returns (previous count, seconds the previous window still weighs, current count, its seconds left)."""
        return self._locked(lambda: self._sliding_window(key, expiry))

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        """Forgets `key`'s counts."""
        self.clear(key)

    # limits' basic storage interface (fixed windows), on the same slots.

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        """What a failing table raises."""
        return (OSError, ValueError)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Adds `amount` to `key`'s fixed window of `expiry` seconds; returns its count."""

        def incr() -> int:
            now = self._clock()
            digest = self._digest(key)
            bucket, offset = self._find(digest)
            start, count = now, 0
            if offset is not None:
                start, length, _, count = _VALUES.unpack_from(self._map, offset + 16)
                if now >= start + length:
                    start, count = now, 0
            else:
                offset = self._take(digest, bucket, now)
            _SLOT.pack_into(self._map, offset, digest, start, float(expiry), 0, count + amount)
            return count + amount

        return self._locked(incr)

    def get(self, key: str) -> int:
        """Returns `key`'s count in its fixed window (0 once it has passed)."""

        def get() -> int:
            _, offset = self._find(self._digest(key))
            if offset is None:
                return 0
            start, length, _, count = _VALUES.unpack_from(self._map, offset + 16)
            return count if self._clock() < start + length else 0

        return self._locked(get)

    def get_expiry(self, key: str) -> float:
        """Returns when `key`'s fixed window ends (now when it has none)."""

        def expiry() -> float:
            _, offset = self._find(self._digest(key))
            if offset is None:
                return self._clock()
            start, length, _, _ = _VALUES.unpack_from(self._map, offset + 16)
            return start + length

        return self._locked(expiry)

    def check(self) -> bool:
        """The table is always reachable."""
        return True

    def reset(self) -> int | None:
        """Forgets every count; returns how many keys had one."""

        def reset() -> int:
            used = 0
            for offset in range(_HEADER_SIZE, len(self._map), _SLOT_SIZE):
                if struct.unpack_from("<d", self._map, offset + 24)[0]:
                    used += 1
            self._map[_HEADER_SIZE:] = bytes(len(self._map) - _HEADER_SIZE)
            return used

        return self._locked(reset)

    def clear(self, key: str) -> None:
        """Forgets `key`'s counts."""

        def clear() -> None:
            _, offset = self._find(self._digest(key))
            if offset is not None:
                self._map[offset : offset + _SLOT_SIZE] = bytes(_SLOT_SIZE)

        self._locked(clear)


class CounterStoreUnavailable(Exception):
    """Raised instead of asking the counter store while the breaker is open (the limiter fails open)."""


class Breaker:
    """Stops calling a failing dependency for `retry_after` seconds, then lets one call try it again.

    Closed: calls go through; a failure opens it (one warning). Open: calls raise
    CounterStoreUnavailable at once until `retry_after` has passed; then the next call is the probe
    (others still fail at once while it runs): its success closes the breaker (one info line), its
    failure opens it for another `retry_after`, silently (the outage was already reported).
    """

    def __init__(self, name: str, retry_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.retry_after = retry_after
        self.clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._probing = False

    @property
    def is_open(self) -> bool:
        """True while calls are refused or a probe is deciding."""
        return self._open_until is not None

    def call(self, operation: Callable[[], T], failures: type[BaseException] | tuple[type[BaseException], ...]) -> T:
        """Returns `operation()`, or raises CounterStoreUnavailable when open or when it fails with `failures`."""
        probe = False
        if self._open_until is not None:
            with self._lock:
                if self._open_until is not None:
                    if self._probing or self.clock() < self._open_until:
                        raise CounterStoreUnavailable(f"{self.name} is unavailable; not asked again yet")
                    self._probing = probe = True
        try:
            result = operation()
        except failures as exc:
            with self._lock:
                was_open, self._probing = self._open_until is not None, False
                self._open_until = self.clock() + self.retry_after
            if not was_open:
                log.warning(
                    "%s unreachable (%s: %s): rate limits are not applied (failing open); trying it again in %g s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    self.retry_after,
                )
            raise CounterStoreUnavailable(f"{self.name} is unavailable: {exc}") from exc
        except BaseException:
            if probe:
                with self._lock:
                    self._probing = False
            raise
        if probe:  # only the probe closes it: a call begun before the failure proves nothing
            with self._lock:
                self._open_until, self._probing = None, False
            log.info("%s reachable again: rate limits apply", self.name)
        return result


class BreakerRedisStorage(RedisStorage):
    """limits' Redis storage behind a Breaker: a hung or stopped Redis is asked once per retry period.

    `tenantry-redis://` and `tenantry-rediss://` URIs are `redis://` and `rediss://` ones.
    """

    STORAGE_SCHEME = ["tenantry-redis", "tenantry-rediss"]  # noqa: RUF012  # as limits declares it

    def __init__(self, uri: str, retry_after: float = 5.0, **options: Any) -> None:
        self.breaker = Breaker("the rate-limit store (Redis)", retry_after)
        super().__init__(uri.removeprefix("tenantry-"), **options)

    def _guarded(self, operation: Callable[[], T]) -> T:
        return self.breaker.call(operation, self.base_exceptions)

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """RedisStorage's, through the breaker."""
        return self._guarded(
            lambda: super(BreakerRedisStorage, self).acquire_sliding_window_entry(key, limit, expiry, amount)
        )

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """RedisStorage's, through the breaker."""
        return self._guarded(lambda: super(BreakerRedisStorage, self).get_sliding_window(key, expiry))

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """RedisStorage's, through the breaker."""
        return self._guarded(lambda: super(BreakerRedisStorage, self).incr(key, expiry, amount))

    def get(self, key: str) -> int:
        """RedisStorage's, through the breaker."""
        return self._guarded(lambda: super(BreakerRedisStorage, self).get(key))

    def check(self) -> bool:
        """True when Redis answers a PING (asked through the breaker)."""
        try:
            return bool(self._guarded(lambda: self.get_connection().ping()))
        except CounterStoreUnavailable:
            return False
