"""The rate limiter shared between processes through the data directory's SQLite database."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from conftest import FakeTime
from stdq.db import Database
from stdq.limiter import RateLimiter, ReadWriteLimiter


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window [t, t + WINDOW)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_burst_then_waits_for_the_oldest_slot(tmp_path):
    clock = FakeTime(1_000_000.0)
    limiter = RateLimiter(tmp_path, "s", 3, 10.0, margin=0.5, sleep=clock.sleep, clock=clock)
    taken = []
    for _ in range(3):  # a burst up to the limit passes at once
        assert limiter.acquire() == 0.0
        taken.append(clock.now)
        clock.now += 1.0
    # the 4th must wait until the first slot (t0) is 10.5 s old: t0 + 10.5 - (t0 + 3)
    assert limiter.acquire() == 7.5
    taken.append(clock.now)
    assert clock.sleeps == [7.5]
    for _ in range(20):
        limiter.acquire()
        taken.append(clock.now)
    assert max_in_window(taken, 10.5) <= 3
    assert limiter.in_window() == 3


def test_scopes_are_separate_and_zero_means_no_limit(tmp_path):
    clock = FakeTime(1_000_000.0)
    a = RateLimiter(tmp_path, "a", 1, 60.0, sleep=clock.sleep, clock=clock)
    b = RateLimiter(tmp_path, "b", 1, 60.0, sleep=clock.sleep, clock=clock)
    assert a.acquire() == 0.0 and b.acquire() == 0.0
    off = RateLimiter(tmp_path, "c", 0, 60.0, sleep=clock.sleep, clock=clock)
    assert all(off.acquire() == 0.0 for _ in range(100))
    assert clock.sleeps == []


def test_methods_go_to_their_limiter(tmp_path):
    clock = FakeTime(1_000_000.0)
    writes = RateLimiter(tmp_path, "w", 1, 60.0, margin=0, sleep=clock.sleep, clock=clock)
    reads = RateLimiter(tmp_path, "r", 2, 60.0, margin=0, sleep=clock.sleep, clock=clock)
    waits = []
    both = ReadWriteLimiter(
        writes, reads, applies_to=lambda url: "atlas" in url, on_wait=lambda k, s: waits.append(k)
    )
    for method in ("POST", "DELETE", "GET", "GET", "HEAD"):
        both.before_request(method, "http://atlas/queue/")
    both.before_request("POST", "http://elsewhere/")  # not the limited host: no slot, no wait
    # DELETE waits for the POST's slot (1 write per 60 s); HEAD for the first GET's (2 reads)
    assert waits == ["write", "read"] and clock.sleeps == [60.0, 60.0]


def test_a_shared_database_gives_its_clock_and_connection(tmp_path):
    clock = FakeTime(1_000_000.0)
    database = Database(tmp_path, clock=clock)
    a = RateLimiter(database, "s", 2, 30.0, margin=0, sleep=clock.sleep)
    b = RateLimiter(database, "s", 2, 30.0, margin=0, sleep=clock.sleep)
    assert a.db is database and b.db is database
    assert a.acquire() == 0.0 and b.acquire() == 0.0
    assert a.acquire() == 30.0  # the two slots are shared, and time is the database's clock
    assert clock.sleeps == [30.0] and b.in_window() == 1  # the first two left the window
    # every row is the injected time: nothing read the real clock
    assert [r[0] for r in database.conn.execute("SELECT ts FROM limiter")] == [1_000_030.0]
    database.close()


def test_a_limiter_used_from_two_threads_opens_one_connection_per_thread(tmp_path):
    clock = FakeTime(1_000_000.0)
    limiter = RateLimiter(tmp_path, "t", 10, 60.0, sleep=clock.sleep, clock=clock)
    limiter.acquire()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            limiter.acquire()
            limiter.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert errors == [] and limiter.in_window() == 2
    limiter.close()


# Each process prints the time its slots were taken (the clock value the limiter stored), so
# the check below does not depend on how fast the processes are scheduled.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from stdq.limiter import RateLimiter
    data_dir, n = sys.argv[1], int(sys.argv[2])
    last = [0.0]
    def clock():
        last[0] = time.time()
        return last[0]
    limiter = RateLimiter(data_dir, "atlas:write", 4, 0.15, margin=0.05, clock=clock)
    for _ in range(n):
        limiter.acquire()
        print(repr(last[0]), flush=True)
    """
)


def test_three_processes_share_the_window(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), "5"], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    times = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        times += [float(line) for line in out.split()]
    assert len(times) == 15
    # 15 slots at 4 per 0.2 s (window + margin): never more than 4 in any 0.2 s, so it waited
    assert max_in_window(times, 0.2) <= 4
    assert max(times) - min(times) >= 3 * 0.2


def test_a_slot_counts_from_its_answer(tmp_path):
    """A request that took 4 s to be answered (a busy machine): the server counted it at some
    moment up to 4 s after the slot was taken, so the next slot of a 1-per-10-s limit waits
    until 10 s after the answer (t = 14), not after the taking (t = 10)."""
    clock = FakeTime(1_000_000.0)
    limiter = RateLimiter(tmp_path, "w", 1, 10.0, margin=0, sleep=clock.sleep, clock=clock)
    assert limiter.acquire() == 0.0
    clock.now += 4.0
    limiter.settle()
    limiter.settle()  # once only: nothing left to settle
    assert limiter.acquire() == 10.0 and clock.sleeps == [10.0]
    # never earlier than taken: a settle with the clock behind leaves the slot alone
    clock.now -= 100.0
    limiter.settle()
    (ts,) = [r[0] for r in limiter.db.conn.execute("SELECT ts FROM limiter ORDER BY ts DESC LIMIT 1")]
    assert ts == 1_000_014.0
    limiter.close()


def test_the_http_client_settles_its_slots_when_answers_arrive(tmp_path):
    import httpx

    from stdq import http
    from stdq.limiter import settle_on_answer

    clock = FakeTime(1_000_000.0)
    writes = RateLimiter(tmp_path, "w", 2, 60.0, margin=0, sleep=clock.sleep, clock=clock)
    reads = RateLimiter(tmp_path, "r", 100, 60.0, margin=0, sleep=clock.sleep, clock=clock)
    both = ReadWriteLimiter(writes, reads)

    def answer(request: httpx.Request) -> httpx.Response:
        clock.now += 3.0  # each answer takes 3 s to come
        return httpx.Response(201, json={})

    client = http.Client("atlas", transport=httpx.MockTransport(answer), sleep=clock.sleep,
                         clock=clock, before_request=both.before_request)
    settle_on_answer(client, both)
    try:
        start = clock.now
        for _ in range(3):
            client.post("http://atlas/queue/")
    finally:
        client.close()
    # slots taken at 0 and 3, settled at 3 and 6: the third waits until 3 + 60 (not 0 + 60)
    assert clock.sleeps == [57.0]
    stored = sorted(r[0] - start for r in writes.db.conn.execute("SELECT ts FROM limiter WHERE scope = 'w'"))
    assert stored == [6.0, 66.0]  # the first left the window (removed); the third settled at 66
    both.close()


def test_turns_of_a_line_of_requests(tmp_path):
    """3 per 10 s, slots taken at 0 and 2, now 5: the next request may go now, then at 10 and
    12 (those slots a window on), then a window after each of those three."""
    clock = FakeTime(0.0)
    limiter = RateLimiter(tmp_path, "w", 3, 10.0, margin=0, sleep=clock.sleep, clock=clock)
    limiter.acquire()
    clock.now = 2.0
    limiter.acquire()
    clock.now = 5.0
    turn_at = limiter.turns()
    assert [turn_at(k) for k in range(7)] == [5.0, 10.0, 12.0, 15.0, 20.0, 22.0, 25.0]
    assert RateLimiter(tmp_path, "off", 0, 10.0, clock=clock).turns()(50) == 5.0
    limiter.close()


def test_an_answer_within_the_margin_needs_no_settling(tmp_path):
    clock = FakeTime(1_000_000.0)
    limiter = RateLimiter(tmp_path, "w", 1, 10.0, margin=0.5, sleep=clock.sleep, clock=clock)
    limiter.acquire()
    clock.now += 0.4  # answered within the 0.5 s margin: the slot stays as taken
    limiter.settle()
    assert abs(limiter.acquire() - 10.1) < 1e-6  # 10.5 after the taking, 0.4 of which passed
    limiter.close()
