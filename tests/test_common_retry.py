"""common.retry: the backoff schedule and the retry loop (sleeps recorded, not waited)."""

import itertools

import pytest

from common.retry import backoff_delays, retry_async


def test_backoff_doubles_up_to_the_cap():
    assert list(itertools.islice(backoff_delays(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_backoff_jitter_stays_in_its_band():
    got = list(itertools.islice(backoff_delays(1.0, 1.0, jitter=0.2), 200))
    assert all(0.8 <= d <= 1.2 for d in got) and len(set(got)) > 1


class Flaky(Exception):
    pass


async def test_retry_runs_again_until_the_step_succeeds():
    slept: list[float] = []
    runs = 0

    async def step() -> str:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise Flaky
        return "done"

    async def sleep(s: float) -> None:
        slept.append(s)

    assert await retry_async(step, retry_on=Flaky, attempts=5, delays=backoff_delays(0.2, 60), sleep=sleep) == "done"
    assert runs == 3 and slept == [0.2, 0.4]


async def test_retry_raises_the_last_error_after_its_attempts_and_not_other_errors():
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        raise Flaky(runs)

    async def sleep(_s: float) -> None:
        return None

    with pytest.raises(Flaky) as exc:
        await retry_async(step, retry_on=Flaky, attempts=4, delays=backoff_delays(1, 1), sleep=sleep)
    assert exc.value.args == (4,) and runs == 4

    async def broken() -> None:
        raise KeyError("not retried")

    with pytest.raises(KeyError):
        await retry_async(broken, retry_on=Flaky, attempts=4, delays=backoff_delays(1, 1), sleep=sleep)
