"""provision.hosts.do_api against the emulator: retries, bounds, errors, throttling, library workarounds."""
from __future__ import annotations

import logging
import os
import time

import pytest

from provision.hosts.do_api import (DigitalOceanError, DigitalOceanNotFound, DOApi, RateLimitExhausted,
                              error_text, normalize_end_point, token_from_env)
from provision.base.errors import EXIT_BAD_INPUT, EXIT_FAILED, InputError
from tests.do_emulator import DOEmulator
from tests.fakes.clock import FakeClock

TOKEN = "dop_v1_adapter_secret_token_feedface"
CREATE = dict(region="fra1", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", ssh_key_ids=[],
              tags=["c"])


@pytest.fixture
def ft():
    return FakeClock()


@pytest.fixture
def emu(ft):
    with DOEmulator(TOKEN, fast=True, clock=ft.clock) as e:
        yield e


@pytest.fixture
def api(emu, ft):
    return DOApi(TOKEN, end_point=emu.url, clock=ft.clock, sleep=ft.sleep, max_retries=4)


def test_429_burst_limit_waits_what_retry_after_says(api, emu, ft):
    emu.inject_429(3, retry_after=7)
    assert api.list_droplets("c") == []
    assert emu.count("GET", "/v2/droplets") == 4
    assert api.retries == 3
    assert ft.sleeps == [7.0, 7.0, 7.0]        # not the exponential back-off (1, 2, 4)


def test_real_burst_limit_retry_after_honoured(ft):
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, wall_clock=ft.clock, per_minute_limit=3) as e:
        api = DOApi(TOKEN, end_point=e.url, clock=ft.clock, sleep=ft.sleep,
                    wall_clock=ft.clock, burst=100)
        for _ in range(4):
            api.list_droplets("c")
        assert e.count("GET", "/v2/droplets") == 5     # the fourth was refused once
        assert ft.sleeps == [60.0]                      # until the first request's minute is over


def test_hourly_budget_exhausted_fails_with_reset_time_without_retrying(ft):
    ft.now = 1_800_000_000.0
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, wall_clock=ft.clock, hourly_limit=50) as e:
        e.use_budget(49)
        ft.now += 600                                   # the oldest expires in 50 minutes
        api = DOApi(TOKEN, end_point=e.url, clock=ft.clock, sleep=ft.sleep,
                    wall_clock=ft.clock, reserve=0)
        api.list_droplets("c")                          # the last request of the hour
        with pytest.raises(RateLimitExhausted) as err:
            api.list_droplets("c")
        assert e.count("GET", "/v2/droplets") == 2      # refused once, never retried
        assert ft.sleeps == []
        assert err.value.reset == 1_800_003_600
        assert str(err.value) == (
            "DigitalOcean API: list droplets tagged c: the rate limit of 50 requests an hour is "
            "used up; requests are accepted again from 2027-01-15 09:00:00 UTC (in 3000 s)")
        assert err.value.exit_code == EXIT_FAILED


def test_hourly_budget_reset_close_is_waited_for(ft):
    ft.now = 1_800_000_000.0
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, wall_clock=ft.clock, hourly_limit=5) as e:
        e.use_budget(5)
        ft.now += 3600 - 30                             # the oldest expires in 30 s
        api = DOApi(TOKEN, end_point=e.url, clock=ft.clock, sleep=ft.sleep, wall_clock=ft.clock)
        assert api.list_droplets("c") == []
        assert ft.sleeps == [30.0]


def test_429_on_create_is_retried_and_creates_once(api, emu):
    emu.inject_429(2, method="POST")
    made = api.create_droplets(["c-1", "c-2"], **CREATE)
    assert [d.name for d in made] == ["c-1", "c-2"]
    assert len(emu.droplets("c")) == 2
    assert emu.count("POST", "/v2/droplets") == 3


def test_5xx_retried_for_reads_including_html_and_bodies_without_id(api, emu):
    emu.inject_5xx(1, status=500)
    emu.inject_5xx(1, status=502, body="html")
    emu.inject_5xx(1, status=503, body="noid")
    assert api.list_droplets("c") == []
    assert emu.count("GET", "/v2/droplets") == 4


def test_bound_exhausted_gives_clear_error(api, emu, ft):
    emu.inject_5xx(50, status=503)
    with pytest.raises(DigitalOceanError) as err:
        api.list_droplets("c")
    assert emu.count("GET", "/v2/droplets") == 5          # 1 + max_retries
    text = str(err.value)
    assert "list droplets tagged c" in text and "after 5 attempts" in text and "503" in text
    assert err.value.exit_code == EXIT_FAILED
    assert sum(ft.sleeps) <= 1 + 2 + 4 + 8


def test_429_bound_exhausted(api, emu):
    emu.inject_429(50)
    with pytest.raises(DigitalOceanError, match="still failing after 5 attempts: HTTP 429 too_many_requests"):
        api.list_ssh_keys()


def test_backoff_is_capped(emu, ft):
    api = DOApi(TOKEN, end_point=emu.url, clock=ft.clock, sleep=ft.sleep, max_retries=8,
                backoff_cap=5.0)
    emu.inject_5xx(8)
    api.list_vpcs()
    assert max(ft.sleeps) == 5.0


def test_create_5xx_not_retried_and_marked_ambiguous(api, emu):
    emu.fail_next_create(created=1)
    with pytest.raises(DigitalOceanError) as err:
        api.create_droplets(["c-1", "c-2"], **CREATE)
    assert err.value.ambiguous and err.value.status == 500
    assert "may have been partly applied" in str(err.value)
    assert emu.count("POST", "/v2/droplets") == 1
    assert [d["name"] for d in emu.droplets("c")] == ["c-1"]


def test_4xx_clear_error_without_retry(api, emu):
    with pytest.raises(DigitalOceanError) as err:
        api.create_droplets(["c-1"], **{**CREATE, "region": "mars1"})
    assert str(err.value) == ("DigitalOcean API: create droplets c-1: HTTP 422 "
                              "unprocessable_entity: Region is not available.")
    assert not err.value.ambiguous and err.value.status == 422
    assert emu.count("POST", "/v2/droplets") == 1


def test_401_names_the_variable_not_the_token(emu, ft):
    api = DOApi("wrong-token-value", end_point=emu.url, clock=ft.clock, sleep=ft.sleep)
    with pytest.raises(DigitalOceanError, match="token was rejected.*DIGITALOCEAN_TOKEN") as err:
        api.list_droplets("c")
    assert "wrong-token-value" not in str(err.value)


def test_not_found_is_typed_and_deletes_are_idempotent(api, emu):
    with pytest.raises(DigitalOceanNotFound):
        api.get_droplet(99)
    assert api.delete_droplet(99) is False
    made = api.create_droplets(["c-1"], **CREATE)
    assert api.delete_droplet(made[0].id) is True
    assert api.delete_firewall("nope") is False and api.delete_vpc("nope") is False


def test_timeout_retried(emu, ft):
    api = DOApi(TOKEN, end_point=emu.url, clock=ft.clock, sleep=ft.sleep, timeout=0.2)
    emu.inject(0, 1, delay=1.0)                 # the next request hangs past the timeout
    assert api.list_droplets("c") == []
    assert api.retries == 1


def test_timeout_on_create_is_ambiguous(emu, ft):
    api = DOApi(TOKEN, end_point=emu.url, clock=ft.clock, sleep=ft.sleep, timeout=0.2)
    emu.inject(0, 1, method="POST", delay=1.0)
    with pytest.raises(DigitalOceanError, match="timed out.*partly applied") as err:
        api.create_droplets(["c-1"], **CREATE)
    assert err.value.ambiguous
    time.sleep(1.0)
    assert [d["name"] for d in emu.droplets()] == ["c-1"]   # it was applied after all


def test_connection_refused_reads_retried_then_clear(ft):
    api = DOApi(TOKEN, end_point="http://127.0.0.1:9/v2", clock=ft.clock, sleep=ft.sleep,
                max_retries=2, timeout=1)
    with pytest.raises(DigitalOceanError, match="after 3 attempts: request connection failed"):
        api.list_droplets("c")


def test_create_multiple_actions_are_tied_to_droplets_by_resource_id(api, emu):
    emu.reverse_create_links()                     # the API promises no order
    made = api.create_droplets(["c-1", "c-2", "c-3"], **CREATE)
    assert all(d.action_id is None for d in made)  # no guess from positions
    assert len({d.batch_actions for d in made}) == 1 and len(made[0].batch_actions) == 3
    history, complete = api.recent_actions(back_to_id=min(made[0].batch_actions))
    by_droplet = {a.resource_id: a.id for a in history if a.type == "create"}
    for d in made:
        assert [a.id for a in api.droplet_actions(d.id)] == [by_droplet[d.id]]
    assert complete and set(by_droplet.values()) == set(made[0].batch_actions)
    lone = api.create_droplets(["c-4"], **CREATE)[0]
    assert lone.action_id == lone.batch_actions[0]


def test_more_than_ten_names_refused_locally(api, emu):
    with pytest.raises(ValueError):
        api.create_droplets([f"c-{i}" for i in range(11)], **CREATE)
    assert emu.total_requests() == 0


def test_end_point_env_set_during_call_and_restored(api, emu, monkeypatch):
    monkeypatch.delenv("DIGITALOCEAN_END_POINT", raising=False)
    monkeypatch.delenv("PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC", raising=False)
    api.create_droplets(["c-1"], **CREATE)        # create_multiple builds its own BaseAPI
    assert "DIGITALOCEAN_END_POINT" not in os.environ
    assert "PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC" not in os.environ
    assert emu.count("POST", "/v2/droplets") == 1
    assert normalize_end_point("http://127.0.0.1:1/v2") == "http://127.0.0.1:1/v2/"


def test_end_point_from_env_and_library_untouched_outside_calls(emu, ft, monkeypatch):
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", emu.url.rstrip("/"))
    api = DOApi(TOKEN, clock=ft.clock, sleep=ft.sleep)
    assert api.end_point == emu.url
    api.list_droplets("c")
    import digitalocean
    emu.inject_429(1)
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", emu.url)
    with pytest.raises(digitalocean.DataReadError):      # hook inert outside DOApi calls
        digitalocean.Manager(token=TOKEN).get_all_droplets()


def test_throttle_token_bucket(emu, ft):
    api = DOApi(TOKEN, end_point=emu.url, clock=ft.clock, sleep=ft.sleep, per_minute=60, burst=2)
    for _ in range(4):
        api.list_droplets("c")
    assert ft.sleeps == pytest.approx([1.0, 1.0])


def test_throttle_waits_for_reset_when_budget_nearly_used(ft):
    with DOEmulator(TOKEN, fast=True, clock=ft.clock, hourly_limit=12, wall_clock=lambda: 5000.0) as e:
        api = DOApi(TOKEN, end_point=e.url, clock=ft.clock, sleep=ft.sleep, reserve=10,
                    wall_clock=lambda: 5000.0 + 3590, backoff_cap=60)
        api.list_droplets("c")       # remaining 11
        api.list_droplets("c")       # remaining 10 -> the next request waits for the reset
        assert ft.sleeps == []
        api.list_droplets("c")
        assert ft.sleeps == [pytest.approx(10.0)]


def test_token_from_env(monkeypatch):
    assert token_from_env({"DIGITALOCEAN_TOKEN": " a "}) == "a"
    assert token_from_env({"DIGITALOCEAN_ACCESS_TOKEN": "b"}) == "b"
    with pytest.raises(InputError) as err:
        token_from_env({})
    assert err.value.exit_code == EXIT_BAD_INPUT and "DIGITALOCEAN_TOKEN" in str(err.value)


def test_token_never_in_logs_errors_or_repr(api, emu, caplog):
    caplog.set_level(logging.DEBUG)
    emu.inject_429(2)
    emu.inject_5xx(2, body="html", method="GET")
    api.create_droplets(["c-1"], **CREATE)
    api.list_droplets("c")
    errors = []
    for call in (lambda: api.create_droplets(["c-2"], **{**CREATE, "size": "huge"}),
                 lambda: api.get_droplet(5)):
        try:
            call()
        except DigitalOceanError as e:
            errors.append(str(e) + repr(e))
    assert len(errors) == 2
    assert "DigitalOcean API" in caplog.text      # the retries were logged
    for text in [caplog.text, *errors, repr(api), str(vars(api).keys())]:
        assert TOKEN not in text
    assert api.scrub(f"x {TOKEN} y") == "x *** y"


def test_error_text_reads_both_documented_shapes():
    assert error_text({"id": "not_found", "message": "gone", "request_id": "r"}) == (
        "not_found", "gone")
    assert error_text({"error": "Error validating resource tag", "messages": None,
                       "root_causes": ["rpc error: tag-name contains invalid characters"]}) == (
        "", "Error validating resource tag; rpc error: tag-name contains invalid characters")
    assert error_text(["not", "a", "dict"]) == ("", "")


def test_root_causes_error_keeps_its_text(api, emu):
    # the tags API answers 400 with {error, messages, root_causes}, not {id, message}
    with pytest.raises(DigitalOceanError) as err:
        api.ensure_tag("no spaces allowed")
    assert err.value.status == 400
    assert "HTTP 400: name: 'no spaces allowed' does not match" in str(err.value)
    assert "Bad Request" not in str(err.value)


def test_unset_fields_are_left_out_of_request_bodies(api, emu):
    from tests.do_emulator.schemas import nulls, problems
    api.create_droplets(["c-1"], **CREATE)                # no vpc_uuid, no user_data
    api.create_vpc("net-1", "fra1")                        # no ip_range, no description
    api.create_droplets(["c-2"], **{**CREATE, "image": 190000001})   # a private image by id
    assert [b for _, _, b in emu.bodies if nulls(b)] == []
    assert [p for meth, tmpl, b in emu.bodies for p in problems(meth, tmpl, b)] == []
    posted = [b for meth, tmpl, b in emu.bodies if (meth, tmpl) == ("POST", "/v2/droplets")]
    assert "vpc_uuid" not in posted[0] and "user_data" not in posted[0]
    assert posted[1]["image"] == 190000001
    assert [d["image"]["id"] for d in emu.droplets("c")] == [170000001, 190000001]


def test_recent_actions_pages_back_only_as_far_as_asked(api, emu, ft):
    emu.fail_action("c-2", after=1)
    made = api.create_droplets(["c-1", "c-2"], **CREATE)
    ft.sleep(2)
    history, complete = api.recent_actions(back_to_id=min(made[0].batch_actions))
    assert complete and emu.count("GET", "/v2/actions") == 1
    assert {a.resource_id: a.status for a in history} == {made[0].id: "completed",
                                                          made[1].id: "errored"}
    emu.set_account(droplet_limit=1000)
    for i in range(45):                             # 450 more create actions: three pages
        api.create_droplets([f"x-{i}-{j}" for j in range(10)], **CREATE)
    emu.reset_counts()
    history, complete = api.recent_actions(back_to_id=min(made[0].batch_actions))
    assert complete and emu.count("GET", "/v2/actions") == 3 and len(history) == 452
    emu.reset_counts()
    history, complete = api.recent_actions(back_to_id=1, max_pages=2)
    assert not complete and emu.count("GET", "/v2/actions") == 2
    emu.reset_counts()
    assert len(api.recent_actions()[0]) == 200 and emu.count("GET", "/v2/actions") == 1


def test_account_and_droplet_count_one_request_each(api, emu):
    emu.set_account(droplet_limit=5, status="warning", status_message="payment overdue")
    api.create_droplets(["c-1", "c-2"], **CREATE)
    account = api.get_account()
    assert (account["droplet_limit"], account["status"], account["status_message"],
            account["email_verified"]) == (5, "warning", "payment overdue", True)
    assert api.count_droplets() == 2
    assert emu.count("GET", "/v2/account") == 1 and emu.count("GET", "/v2/droplets") == 1
