"""ATLAS polling (issue 10 item 4): the waits follow ``queuepos`` while queued, are
``poll_interval`` while running, never exceed ``max_poll_interval``; the finish is seen
at most one ``poll_interval`` late; the ETag's 304s stay.

The service runs in this process against the emulator, both on one fake clock: a wait
the service asks for moves the clock (no real sleeps)."""

from __future__ import annotations

import math

import httpx
import pytest

from stdq.config import load_settings
from stdq.registry import Registry
from stdq.services.atlas import QueueWaits
from stdq.services.base import QueryContext
from stdq.store import Store
from stdq.targets import Target
from stdq.testing import sky
from stdq.testing.atlas import TEST_TOKEN, AtlasEmulator
from stdq.testing.fakeserver import settings_toml

SN = sky.find("SN 2023ixf")
POLL = 3.0
LONGEST = 30.0


def EMULATORS():
    return [AtlasEmulator()]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t


# -- the schedule alone ---------------------------------------------------------------


def drain(ahead: int, per_position: float, run: float, waits: QueueWaits) -> tuple[list, float]:
    """Poll a model queue: the task starts after AHEAD positions of PER_POSITION seconds
    each and runs RUN seconds. Returns the (time, wait) pairs and the overshoot."""
    start = ahead * per_position
    t, asked = 0.0, []
    while True:
        if t >= start + run:
            return asked, t - (start + run)
        if t >= start:
            wait = waits.running()
        else:
            wait = waits.queued(t, math.ceil((start - t) / per_position))
        asked.append((t, wait))
        t += wait


@pytest.mark.parametrize("ahead, per_position", [(1, 1.0), (3, 23.3), (10, 20.0), (40, 45.0)])
def test_queued_waits_follow_the_position_and_the_finish_is_seen_within_one_interval(
    ahead, per_position
):
    asked, overshoot = drain(ahead, per_position, 20.0, QueueWaits(POLL, LONGEST))
    waits = [w for _, w in asked]
    assert all(POLL <= w <= LONGEST for w in waits)
    assert overshoot <= POLL + 1e-9
    start = ahead * per_position
    # the last waits before the start are back at poll_interval: the start is seen in time
    before = [w for t, w in asked if t < start]
    assert before[-1] == POLL
    # far back in a long queue the waits are long; fewer polls than every 4 s (the
    # API guide's example client)
    if start > 300:
        assert max(before) == LONGEST
        assert len(asked) < (start / 4 + 20 / 2) / 2


def test_first_wait_is_poll_interval_and_far_back_waits_grow_to_the_cap():
    waits = QueueWaits(POLL, LONGEST)
    assert waits.queued(0.0, 200) == POLL  # nothing measured yet
    assert waits.queued(3.0, 200) == LONGEST  # 200 positions that each took >= 3 s
    assert waits.queued(33.0, 200) == LONGEST
    assert waits.running() == POLL


def test_near_the_head_the_wait_is_poll_interval():
    waits = QueueWaits(POLL, LONGEST)
    waits.queued(0.0, 3)
    waits.queued(10.0, 2)  # one position in ~5-10 s
    assert waits.queued(13.0, 1) == POLL  # the start is a few seconds away


def test_without_a_position_the_wait_grows_to_the_cap():
    waits = QueueWaits(POLL, LONGEST)
    seen = [waits.queued(float(i), None) for i in range(12)]
    assert seen[0] == POLL and seen[1] == POLL * 1.5 and seen[-1] == LONGEST
    assert seen == sorted(seen)


def test_a_rising_position_starts_the_measurement_again():
    waits = QueueWaits(POLL, LONGEST)
    waits.queued(0.0, 5)
    waits.queued(100.0, 4)
    waits.queued(103.0, 9)  # tasks put ahead of ours
    # measured from 103 s on: 9 positions of >= 3 s, half of it (not 100 s per position)
    assert waits.queued(106.0, 9) == 13.5


# -- the service against the emulator, on one fake clock -------------------------------


@pytest.fixture
def polled(fake_server, tmp_path, monkeypatch):
    """Run one ATLAS query in this process; returns (run, emulator, clock, waits)."""
    clock = FakeClock()
    emulator = fake_server.emulator("atlas")
    emulator.clock = clock.now
    emulator.settings_overrides = {"poll_interval": POLL, "max_poll_interval": LONGEST}
    config = tmp_path / "settings.toml"
    config.write_text(settings_toml(fake_server))
    settings = load_settings(config, data_dir=tmp_path / "data")
    asked: list[tuple[float, float]] = []

    def sleep(self, seconds: float) -> None:
        asked.append((clock.t, float(seconds)))
        clock.t += float(seconds)

    monkeypatch.setattr(QueryContext, "sleep", sleep)
    monkeypatch.delenv("STDQ_ATLAS_API_KEY", raising=False)
    monkeypatch.delenv("ATLAS_FORCED_PHOTOMETRY_API_KEY", raising=False)

    def run(**checkpoint) -> float:
        registry = Registry(settings)
        service = registry.service("atlas")
        store = Store(settings.data_dir)
        context = QueryContext(
            store=store, settings=settings, service_config=registry.service_config("atlas"),
            data_product_type=service.data_product_type, clock=clock.now,
            checkpoint=dict(checkpoint),
        )
        context.client_factory = lambda: service.make_client(context)
        try:
            service.query_service(Target(SN.ra, SN.dec, name=SN.name), {}, context)
        finally:
            context.close()
            store.close()
        return clock.t

    return run, emulator, clock, asked


def task_gets(fake_server, task_id):
    return [r for r in fake_server.log_of(emulator="atlas", method="GET", path=f"/queue/{task_id}/$")]


@pytest.mark.parametrize("ahead, queue_seconds", [(3, 70.0), (12, 600.0), (1, 1.0)])
def test_the_waits_for_a_queue_of_n_ahead(polled, fake_server, ahead, queue_seconds):
    run, emulator, clock, asked = polled
    emulator.queue_ahead = ahead
    emulator.queue_seconds = queue_seconds
    emulator.run_seconds = 20.0
    start = clock.t
    seen_at = run()
    task = emulator.tasks[max(emulator.tasks)]
    assert task.created == start and task.started == start + queue_seconds
    waits = [w for _, w in asked]
    assert all(POLL <= w <= LONGEST for w in waits), waits
    # the finish is seen at most one poll_interval late
    assert 0 <= seen_at - task.finished <= POLL + 1e-6
    # the start too: the waits while it ran were poll_interval
    running = [w for t, w in asked if t >= task.started]
    assert running and all(w == POLL for w in running)
    assert min(t for t, _ in asked if t >= task.started) - task.started <= POLL + 1e-6
    # no GET right after the POST (its answer was the first look); 304s for unchanged polls
    gets = task_gets(fake_server, task.id)
    assert len(gets) == len(asked)
    assert sum(r.status == 304 for r in gets) >= len(gets) // 2
    if queue_seconds >= 600:
        assert max(waits) == LONGEST  # far back: long waits
        assert len(gets) < (queue_seconds / 4 + 20 / 2) / 2  # vs the example client's 4 s / 2 s


def test_the_sequence_of_waits_for_three_ahead_in_70_s(polled):
    run, emulator, clock, asked = polled
    emulator.queue_ahead, emulator.queue_seconds, emulator.run_seconds = 3, 70.0, 1.0
    start = clock.t
    run()
    waits = [round(w, 1) for _, w in asked]
    # position 3 for 23.3 s: waits grow as the time spent there does; then the measured
    # fall (one position in ~23 s) gives long waits that halve towards the start
    assert waits[:3] == [3.0, 4.5, 11.2]
    assert all(w == POLL for t, w in asked if t - start > 62)
    assert len(waits) <= 16


def test_a_resumed_job_polls_at_once(polled, fake_server):
    run, emulator, clock, asked = polled
    emulator.queue_seconds, emulator.run_seconds = 0.0, 0.0
    response = httpx.post(f"{emulator.base_url}/queue/", data={"ra": SN.ra, "dec": SN.dec, "mjd_min": 57000.0},
                          headers={"Authorization": f"Token {TEST_TOKEN}"})
    task = response.json()
    run(task_url=task["url"], task_id=task["id"])
    assert asked == []  # finished at the first look: no wait at all
    assert len(task_gets(fake_server, task["id"])) == 1
    assert len(fake_server.log_of(emulator="atlas", method="POST")) == 1  # never sent again
