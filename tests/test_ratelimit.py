"""Per-user rate limit on analyses (issue #7): the sliding window with an injected clock, the key
taken from a request, the configuration, and the wiring: an over-limit analysis is refused with one
line before the file is read or a model loaded, and another user is unaffected."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from webapp.ratelimit import DEFAULT_PER_HOUR, ENV, RateLimited, RateLimiter, client_key


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_allows_n_per_hour_then_refuses_until_the_oldest_leaves():
    clock = Clock()
    limit = RateLimiter(3, clock=clock)
    for _ in range(3):
        limit.check("ip:1.2.3.4")
        clock.now += 60
    assert limit.remaining("ip:1.2.3.4") == 0
    with pytest.raises(RateLimited) as err:
        limit.check("ip:1.2.3.4")
    message = str(err.value)
    assert "3 analyses per hour" in message and "57 min" in message and "\n" not in message
    assert limit.remaining("ip:1.2.3.4") == 0               # a refused request is not counted
    clock.now = 1000.0 + 3600                               # the first request leaves the window
    limit.check("ip:1.2.3.4")
    with pytest.raises(RateLimited, match="60 s"):
        limit.check("ip:1.2.3.4")


def test_users_are_counted_apart_and_off_means_off():
    clock = Clock()
    limit = RateLimiter(1, clock=clock)
    limit.check("user:ann")
    with pytest.raises(RateLimited):
        limit.check("user:ann")
    limit.check("user:bob")                                 # another user: unaffected
    limit.check(None)                                       # no user (in-process call): not limited
    off = RateLimiter(0, clock=clock)
    for _ in range(1000):
        off.check("user:ann")
    assert off.remaining("user:ann") is None and not off.enabled and "no rate limit" in off.describe()


def test_idle_users_are_forgotten_beyond_the_cap():
    limit = RateLimiter(1, clock=Clock(), max_users=3)
    for user in ("a", "b", "c", "d"):
        limit.check(user)
    assert limit.remaining("a") == 1                        # the longest idle one was dropped
    assert limit.remaining("d") == 0


def test_configuration_from_flag_env_and_default(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert RateLimiter.from_env().per_hour == DEFAULT_PER_HOUR
    monkeypatch.setenv(ENV, "5")
    assert RateLimiter.from_env().per_hour == 5
    assert RateLimiter.from_env(0).per_hour == 0            # the flag wins
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(ValueError, match=ENV):
        RateLimiter.from_env()
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="whole number"):
            RateLimiter(bad)


def test_the_key_is_the_login_else_the_ip_else_the_session():
    client = SimpleNamespace(host="203.0.113.7")
    assert client_key(SimpleNamespace(username="ann", client=client, session_hash="s1")) == "user:ann"
    assert client_key(SimpleNamespace(username=None, client=client, session_hash="s1")) == "ip:203.0.113.7"
    assert client_key(SimpleNamespace(username=None, client=None, session_hash="s1")) == "session:s1"
    assert client_key(None) is None


# ------------------------------------------------------------------ wired into the workbench

def _stop():
    raise RuntimeError("stop here")


@pytest.fixture
def workbench(tmp_path):
    from webapp.service import ModelHolder, Workbench
    return Workbench(ModelHolder(), tmp_path / "data", rate=RateLimiter(1, clock=Clock()))


def test_over_limit_analysis_is_refused_before_any_work(workbench, tmp_path, monkeypatch):
    """The model and the file are never touched for a refused request: `holder.get` and the limits
    check are replaced by recorders (an analysis itself is not needed to show the order)."""
    calls = []
    monkeypatch.setattr(workbench, "limits", SimpleNamespace(check_media=lambda path: calls.append("file")
                                                             or _stop()))
    monkeypatch.setattr(workbench.holder, "get", lambda: calls.append("models"))
    upload = tmp_path / "talk.mp4"
    upload.write_bytes(b"x")
    with pytest.raises(RuntimeError, match="stop here"):
        workbench.analyze(upload, user="ip:10.0.0.1")        # first one: allowed, goes on to the file
    assert calls == ["file"]
    with pytest.raises(RateLimited):
        workbench.analyze(upload, user="ip:10.0.0.1")
    assert calls == ["file"]                                 # nothing read, no model loaded
    with pytest.raises(RuntimeError, match="stop here"):
        workbench.analyze(upload, user="ip:10.0.0.2")        # someone else: goes on


def test_the_page_says_it_in_one_line(workbench, tmp_path, monkeypatch):
    from webapp.handlers import Handlers
    from webapp.render import Page, Renderer
    page = Page(**{name: name for name in Page.__dataclass_fields__})
    h = Handlers(Renderer(workbench, page))
    monkeypatch.setattr(workbench, "limits", SimpleNamespace(check_media=lambda path: _stop()))
    upload = tmp_path / "talk.mp4"
    upload.write_bytes(b"x")
    request = SimpleNamespace(username=None, client=SimpleNamespace(host="198.51.100.4"), session_hash="s",
                              cookies={"wb_owner": "a-browser-token-0123456789"}, headers={})
    first = h.analyse(str(upload), True, False, None, request, lambda *a, **k: None)
    assert "failed" in first["status"] and "Rate limit" not in first["status"]
    second = h.analyse(str(upload), True, False, None, request, lambda *a, **k: None)
    status = second["status"]          # stays on the page, in one line, until the next action
    assert "Rate limit reached" in status and "\n" not in status


def test_through_the_server_each_client_address_has_its_own_count(tmp_path):
    """Two gradio_client users behind a proxy (X-Forwarded-For from 127.0.0.1, which uvicorn trusts
    by default): the second request of the first is refused, the second user is not. Empty files are
    sent, so nothing heavy runs either way (the first request fails on the file, after being counted)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from tests import mediagen
    from tests.serving import start_workbench
    demo, wb = start_workbench(None, tmp_path / "data")
    wb.rate = RateLimiter(1)
    empty = str(mediagen.empty_file(tmp_path / "empty.mp4"))
    try:
        ann = Client(demo.local_url, verbose=False, headers={"X-Forwarded-For": "203.0.113.1"})
        bob = Client(demo.local_url, verbose=False, headers={"X-Forwarded-For": "203.0.113.2"})
        with pytest.raises(AppError) as first:
            ann.predict(handle_file(empty), api_name="/analyze")
        assert "Rate limit" not in str(first.value)
        with pytest.raises(AppError, match="Rate limit reached: at most 1 analyses per hour"):
            ann.predict(handle_file(empty), api_name="/analyze")
        with pytest.raises(AppError) as other:
            bob.predict(handle_file(empty), api_name="/analyze")
        assert "Rate limit" not in str(other.value)
        assert isinstance(ann.predict(api_name="/sessions"), list)      # only analyses are limited
    finally:
        demo.close()
