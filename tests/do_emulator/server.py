"""HTTP front of the emulator: routing, bearer token, pagination, rate-limit headers, faults, counters.

Listens on 127.0.0.1 only, on a free port. Paths are routed after stripping a trailing '/', because
python-digitalocean mixes `droplets/` and `tags`. Requests are counted by (method, path template),
e.g. ("GET", "/v2/droplets") or ("DELETE", "/v2/droplets/{id}"), whatever the answer was.
"""
from __future__ import annotations

import hmac
import json
import math
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from . import model as m
from . import schemas

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 200

# How the API behaves by default (DigitalOcean's published limits; the lag is our assumption of
# what an eventually consistent list shows): `DOEmulator(fast=True)` turns lag and the minute
# limits off for unit tests that count polls.
REALISTIC_LIST_LAG = 10.0               # seconds before a new droplet shows up in lists
PER_MINUTE_LIMIT = 250
HOURLY_LIMIT = 5000
# endpoints with a tighter limit of their own: (method, template) -> (requests, seconds)
ENDPOINT_LIMITS = {("GET", "/v2/account/keys"): (10, 60)}
DROPLET_LIMIT = 25                      # a new account's limit is often 10 to 25
_UNSET = object()


@dataclass
class Fault:
    status: int                 # 429, 5xx; 0 = only a delay
    remaining: int
    method: str | None = None
    template: str | None = None
    delay: float = 0.0
    body: str = "json"          # "json" | "html" (a proxy's page) | "noid" (JSON without "id")
    retry_after: float | None = 1.0     # 429 only: the burst limit's header; None: hourly shape

    def matches(self, method: str, template: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self.template is None or self.template == template))


@dataclass
class CreateFailure:
    created: int                # droplets of the batch actually created before the error
    status: int


ROUTES: list[tuple[str, str, str]] = [
    # (method, template, handler name)
    ("GET", "/v2/account", "account"),
    ("GET", "/v2/account/keys", "list_keys"),
    ("POST", "/v2/account/keys", "create_key"),
    ("GET", "/v2/account/keys/{key}", "get_key"),
    ("DELETE", "/v2/account/keys/{key}", "delete_key"),
    ("GET", "/v2/droplets", "list_droplets"),
    ("POST", "/v2/droplets", "create_droplets"),
    ("DELETE", "/v2/droplets", "delete_droplets_by_tag"),
    ("GET", "/v2/droplets/{id}", "get_droplet"),
    ("DELETE", "/v2/droplets/{id}", "delete_droplet"),
    ("GET", "/v2/droplets/{id}/actions", "droplet_actions"),
    ("GET", "/v2/droplets/{id}/actions/{action}", "droplet_action"),
    ("GET", "/v2/actions", "list_actions"),
    ("GET", "/v2/actions/{action}", "get_action"),
    ("GET", "/v2/tags", "list_tags"),
    ("POST", "/v2/tags", "create_tag"),
    ("GET", "/v2/tags/{tag}", "get_tag"),
    ("DELETE", "/v2/tags/{tag}", "delete_tag"),
    ("POST", "/v2/tags/{tag}/resources", "tag_resources"),
    ("DELETE", "/v2/tags/{tag}/resources", "untag_resources"),
    ("GET", "/v2/firewalls", "list_firewalls"),
    ("POST", "/v2/firewalls", "create_firewall"),
    ("GET", "/v2/firewalls/{fw}", "get_firewall"),
    ("PUT", "/v2/firewalls/{fw}", "update_firewall"),
    ("DELETE", "/v2/firewalls/{fw}", "delete_firewall"),
    ("POST", "/v2/firewalls/{fw}/droplets", "firewall_add_droplets"),
    ("DELETE", "/v2/firewalls/{fw}/droplets", "firewall_remove_droplets"),
    ("POST", "/v2/firewalls/{fw}/tags", "firewall_add_tags"),
    ("DELETE", "/v2/firewalls/{fw}/tags", "firewall_remove_tags"),
    ("GET", "/v2/vpcs", "list_vpcs"),
    ("POST", "/v2/vpcs", "create_vpc"),
    ("GET", "/v2/vpcs/{vpc}", "get_vpc"),
    ("PATCH", "/v2/vpcs/{vpc}", "patch_vpc"),
    ("DELETE", "/v2/vpcs/{vpc}", "delete_vpc"),
    ("GET", "/v2/regions", "list_regions"),
    ("GET", "/v2/sizes", "list_sizes"),
    ("GET", "/v2/images", "list_images"),
]
_COMPILED = [(meth, tmpl, re.compile("^" + re.sub(r"\{\w+\}", "([^/]+)", tmpl) + "$"), name)
             for meth, tmpl, name in ROUTES]


def match_route(method: str, path: str) -> tuple[str, str | None, list[str]]:
    """(template, handler name or None, path args). Unknown paths get template '?'."""
    path = path.rstrip("/") or "/"
    known = None
    for meth, tmpl, rx, name in _COMPILED:
        mt = rx.match(path)
        if mt:
            known = tmpl
            if meth == method:
                return tmpl, name, list(mt.groups())
    return known or "?", None, []


class DOEmulator:
    """DigitalOcean API v2 subset on 127.0.0.1. Use as a context manager or start()/stop().

    host_factory(droplet_name, index) -> (public_ip, private_ip) turns a droplet into a machine;
    host_destroyer(droplet_name) removes it. A custom factory runs in background threads (the
    droplet turns active once it returns and the activation delay has passed).
    """

    def __init__(self, token: str = "emulator-token", *, fast: bool = False,
                 activation_delay: float = 0.0, host_factory=None, host_destroyer=None,
                 factory_in_background: bool | None = None, clock=time.monotonic,
                 wall_clock=time.time, hourly_limit: int = HOURLY_LIMIT,
                 per_minute_limit=_UNSET, list_lag=_UNSET, endpoint_limits=_UNSET,
                 droplet_limit: int = DROPLET_LIMIT, account_status: str = "active",
                 status_message: str = "", email_verified: bool = True):
        """By default as the API behaves: `hourly_limit` and `per_minute_limit` (5,000 an hour,
        250 a minute), `endpoint_limits` (10 GET /v2/account/keys a minute), `list_lag` (seconds
        after its create before a droplet shows up in droplet lists: the API promises 202
        "accepted", not that a list sees the droplet at once; GET by id sees it at once) and
        `droplet_limit` (a create beyond it is refused). `fast=True` turns the lag and the
        minute limits off (any of them can still be given). The account's `status` ("active",
        "warning", "locked"), `status_message` and `email_verified` are what GET /v2/account
        answers."""
        self._token = token
        self.wall_clock = wall_clock
        self.hourly_limit = hourly_limit
        self.per_minute_limit = (None if fast else PER_MINUTE_LIMIT) \
            if per_minute_limit is _UNSET else per_minute_limit
        self.endpoint_limits = dict({} if fast else ENDPOINT_LIMITS) \
            if endpoint_limits is _UNSET else dict(endpoint_limits or {})
        self.account = {"status": account_status, "status_message": status_message,
                        "email_verified": email_verified}
        if factory_in_background is None:
            factory_in_background = host_factory is not None
        self.model = m.Model(clock=clock, activation_delay=activation_delay,
                             host_factory=host_factory or m.default_host_factory,
                             host_destroyer=host_destroyer,
                             factory_in_background=factory_in_background, wall_clock=wall_clock)
        self.model.list_lag = (0.0 if fast else REALISTIC_LIST_LAG) if list_lag is _UNSET \
            else float(list_lag)
        self.model.droplet_limit = droplet_limit
        self.counts: Counter = Counter()
        self.log: list[tuple[str, str, dict, int]] = []     # (method, template, query, status)
        self.bodies: list[tuple[str, str, object]] = []     # (method, template, JSON body)
        # (method, template, status, JSON body or None) of every answer, for the schema tests
        self.responses: list[tuple[str, str, int, object]] = []
        self.faults: list[Fault] = []
        self.create_failures: list[CreateFailure] = []
        # wall times of the requests that count: each one counts for an hour (a minute for the
        # burst limit) from when it was made, as DigitalOcean documents its limits
        self._hour: deque = deque()
        self._minute: deque = deque()
        self._endpoint: dict[tuple[str, str], deque] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> "DOEmulator":
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="do-emulator", daemon=True)
        self._thread.start()
        self.model.base_url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.model.close()

    def __enter__(self) -> "DOEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Endpoint for DIGITALOCEAN_END_POINT, with the trailing slash the library needs."""
        return f"http://127.0.0.1:{self.port}/v2/"

    # --- test controls --------------------------------------------------------------------
    def inject(self, status: int, count: int = 1, *, method: str | None = None,
               path: str | None = None, delay: float = 0.0, body: str = "json") -> None:
        """The next `count` matching requests get `status` (after `delay` seconds)."""
        with self.model.lock:
            self.faults.append(Fault(status, count, method, path, delay, body))

    def inject_429(self, count: int = 1, *, retry_after: float | None = 1.0, **kw) -> None:
        """Burst-limit 429s (with `retry-after`), or with retry_after=None hourly-budget ones
        (no `retry-after`; `ratelimit-reset` says when the oldest counted request expires)."""
        with self.model.lock:
            self.faults.append(Fault(429, count, kw.get("method"), kw.get("path"),
                                     kw.get("delay", 0.0), retry_after=retry_after))

    def fail_action(self, name: str, after: float = 0.0) -> None:
        """The create action of the next droplet called `name` errors `after` seconds after the
        create; the droplet then stays `new` and never gets addresses."""
        with self.model.lock:
            self.model.action_errors[name] = after

    def default_vpc(self, region: str) -> str:
        with self.model.lock:
            return self.model._default_vpc(region)

    def set_list_lag(self, seconds: float, *, actions: bool = False) -> None:
        """New droplets show up in lists `seconds` after their create; with `actions` their
        create actions show up in the account's action history that late too."""
        with self.model.lock:
            self.model.list_lag = seconds
            self.model.actions_lag = actions

    def reverse_create_links(self, on: bool = True) -> None:
        """Create answers list their actions in the reverse of the droplets' order (the API
        promises no order)."""
        with self.model.lock:
            self.model.reverse_create_links = on

    def set_account(self, **fields) -> None:
        """droplet_limit, status, status_message, email_verified of GET /v2/account."""
        with self.model.lock:
            if "droplet_limit" in fields:
                self.model.droplet_limit = fields.pop("droplet_limit")
            self.account.update(fields)

    def use_budget(self, requests: int) -> None:
        """Count `requests` made now against the hourly budget (a run that started late)."""
        with self.model.lock:
            self._hour.extend([self.wall_clock()] * requests)

    def inject_5xx(self, count: int = 1, status: int = 500, **kw) -> None:
        self.inject(status, count, **kw)

    def fail_next_create(self, created: int, status: int = 500) -> None:
        """The next droplet create makes only its first `created` droplets, then answers `status`."""
        with self.model.lock:
            self.create_failures.append(CreateFailure(created, status))

    def set_activation_delay(self, seconds: float, name: str | None = None) -> None:
        with self.model.lock:
            if name is None:
                self.model.activation_delay = seconds
            else:
                self.model.activation_delays[name] = seconds

    def count(self, method: str, template: str) -> int:
        with self.model.lock:
            return self.counts[(method, template)]

    def total_requests(self) -> int:
        with self.model.lock:
            return sum(self.counts.values())

    def list_polls(self, tag: str | None = None) -> int:
        """GET /v2/droplets requests filtered by tag (`tag` or any tag)."""
        with self.model.lock:
            return sum(1 for meth, tmpl, q, _ in self.log
                       if meth == "GET" and tmpl == "/v2/droplets" and "tag_name" in q
                       and (tag is None or q["tag_name"] == tag))

    def reset_counts(self) -> None:
        with self.model.lock:
            self.counts.clear()
            self.log.clear()

    def droplets(self, tag: str | None = None, *, lagged: bool = True) -> list[dict]:
        """What a droplet list shows now (`lagged=False`: every droplet that exists)."""
        with self.model.lock:
            return self.model.list_droplets({"tag_name": tag} if tag else {}, lag=lagged)

    @property
    def errors(self) -> list[str]:
        return list(self.model.errors)

    # --- request handling (called from handler threads) -------------------------------------
    def handle(self, method: str, raw_path: str, headers, body_bytes: bytes):
        """Returns (status, body dict | str | None, extra headers, delay seconds)."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        template, handler, args = match_route(method, split.path)
        with self.model.lock:
            self.counts[(method, template)] += 1
            status, body, extra, delay = self._dispatch(method, split.path, template, handler,
                                                        args, query, headers, body_bytes)
            self.log.append((method, template, query, status))
            self.responses.append((method, template, status, body))
            extra = {**self._ratelimit_headers(), **extra}
        return status, body, extra, delay

    def _dispatch(self, method, path, template, handler, args, query, headers, body_bytes):
        auth = headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self._token}".encode()):
            return (*m.error(401, "unauthorized", "Unable to authenticate you."), {}, 0.0)
        fault = next((f for f in self.faults if f.remaining > 0 and f.matches(method, template)), None)
        if fault:
            fault.remaining -= 1
            if fault.status == 429:
                return (*self._too_many(), self._limited_headers(fault.retry_after), fault.delay)
            if fault.status:
                return (*self._fault_body(fault), {}, fault.delay)
        delay = fault.delay if fault else 0.0
        refused = self._admit(method, template)
        if refused is not None:
            return (*self._too_many(), refused, delay)
        if handler is None:
            if template != "?":
                return (*m.error(405, "method_not_allowed", f"{method} is not allowed here."),
                        {}, delay)
            return (*m.not_found(), {}, delay)
        op = schemas.OPERATIONS.get((method, template))
        try:
            body = json.loads(body_bytes) if body_bytes.strip() else {}
        except ValueError:
            return (*self._invalid(op, 400, "error parsing request body"), {}, delay)
        self.bodies.append((method, template, body))
        if op is not None:
            problem = schemas.problem(op, body)
            if problem:
                return (*self._invalid(op, op.status, problem), {}, delay)
        elif not isinstance(body, dict):
            return (*self._invalid(op, 400, "the request body must be a JSON object"), {}, delay)
        status, payload = getattr(self, "_h_" + handler)(args, query, body, path)
        return status, payload, {}, delay

    @staticmethod
    def _invalid(op, status: int, message: str):
        error_id = schemas.ERROR_IDS.get(status, "error")
        return status, schemas.error_body(op, status, error_id, message, m.request_id())

    @staticmethod
    def _too_many():
        return m.error(429, "too_many_requests", "API rate limit exceeded.")

    def _fault_body(self, fault: Fault):
        if fault.body == "html":
            return fault.status, f"<html><body><h1>{fault.status} Bad Gateway</h1></body></html>"
        if fault.body == "noid":
            return fault.status, {"message": "upstream failure"}
        return m.error(fault.status, "server_error", "Server was unable to give you a response.")

    def _expire(self, now: float) -> None:
        while self._hour and self._hour[0] <= now - 3600:
            self._hour.popleft()
        while self._minute and self._minute[0] <= now - 60:
            self._minute.popleft()

    def _admit(self, method: str, template: str) -> dict | None:
        """None when the request may run (and now counts), else the 429's headers: hourly
        budget used up -> no retry-after (wait for ratelimit-reset); burst limit or an
        endpoint's own limit -> retry-after."""
        now = self.wall_clock()
        self._expire(now)
        if len(self._hour) >= self.hourly_limit:
            return self._limited_headers(None)
        if self.per_minute_limit and len(self._minute) >= self.per_minute_limit:
            return self._limited_headers(max(1, math.ceil(self._minute[0] + 60 - now)))
        own = self.endpoint_limits.get((method, template))
        if own:
            count, seconds = own
            recent = self._endpoint.setdefault((method, template), deque())
            while recent and recent[0] <= now - seconds:
                recent.popleft()
            if len(recent) >= count:
                return self._limited_headers(max(1, math.ceil(recent[0] + seconds - now)))
            recent.append(now)
        self._hour.append(now)
        self._minute.append(now)
        return None

    def _limited_headers(self, retry_after: float | None) -> dict:
        extra = {"Ratelimit-Remaining": "0"}
        if retry_after is not None:
            extra["Retry-After"] = str(int(math.ceil(retry_after)))
        return extra

    def _ratelimit_headers(self) -> dict:
        now = self.wall_clock()
        self._expire(now)
        reset = self._hour[0] + 3600 if self._hour else now
        return {"Ratelimit-Limit": str(self.hourly_limit),
                "Ratelimit-Remaining": str(max(0, self.hourly_limit - len(self._hour))),
                "Ratelimit-Reset": str(int(math.ceil(reset)))}

    def _page(self, key: str, items: list, query: dict, path: str):
        try:
            per_page = int(query.get("per_page", DEFAULT_PER_PAGE))
            page = int(query.get("page", 1))
        except ValueError:
            return m.error(400, "bad_request", "page and per_page must be integers")
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        page = max(1, page)
        last = max(1, -(-len(items) // per_page))
        base = f"http://127.0.0.1:{self.port}{path.rstrip('/')}"
        others = {k: v for k, v in query.items() if k not in ("page", "per_page")}

        def link(n):
            return base + "?" + urlencode({**others, "page": n, "per_page": per_page})
        pages = {}
        if page > 1:
            pages.update(first=link(1), prev=link(page - 1))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        chunk = items[(page - 1) * per_page: page * per_page]
        return 200, {key: chunk, "links": {"pages": pages}, "meta": {"total": len(items)}}

    # --- handlers: (args, query, body, path) -> (status, payload) ----------------------------
    def _h_account(self, a, q, b, p):
        return 200, {"account": {"droplet_limit": self.model.droplet_limit,
                                 "floating_ip_limit": 10, "volume_limit": 100,
                                 "email": "lab@example.com", "name": "Lab",
                                 "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
                                 **self.account}}

    def _h_list_keys(self, a, q, b, p):
        return self._page("ssh_keys", self.model.list_keys(), q, p)

    def _h_create_key(self, a, q, b, p):
        return self.model.create_key(b)

    def _h_get_key(self, a, q, b, p):
        return self.model.get_key(a[0])

    def _h_delete_key(self, a, q, b, p):
        return self.model.delete_key(a[0])

    def _h_list_droplets(self, a, q, b, p):
        return self._page("droplets", self.model.list_droplets(q), q, p)

    def _h_create_droplets(self, a, q, b, p):
        failure = self.create_failures.pop(0) if self.create_failures else None
        created = self.model.create_droplets(b, limit=failure.created if failure else None)
        if isinstance(created, tuple):
            return created
        if failure:
            return m.error(failure.status, "server_error", "Server was unable to give you a response.")
        return self.model.create_response(created, single="names" not in b or b["names"] is None)

    def _h_delete_droplets_by_tag(self, a, q, b, p):
        tag = q.get("tag_name")
        if not tag:
            return m.unprocessable("tag_name is required")
        for d in self.model.list_droplets({"tag_name": tag}, lag=False):
            self.model.delete_droplet(str(d["id"]))
        return 204, None

    def _h_get_droplet(self, a, q, b, p):
        return self.model.get_droplet(a[0])

    def _h_delete_droplet(self, a, q, b, p):
        return self.model.delete_droplet(a[0])

    def _h_droplet_actions(self, a, q, b, p):
        status, actions = self.model.droplet_actions(a[0])
        return (status, actions) if status != 200 else self._page("actions", actions, q, p)

    def _h_droplet_action(self, a, q, b, p):
        return self.model.get_action(a[1], droplet_id=a[0])

    def _h_list_actions(self, a, q, b, p):
        return self._page("actions", self.model.list_actions(), q, p)

    def _h_get_action(self, a, q, b, p):
        return self.model.get_action(a[0])

    def _h_list_tags(self, a, q, b, p):
        return self._page("tags", self.model.list_tags(), q, p)

    def _h_create_tag(self, a, q, b, p):
        return self.model.create_tag(b)

    def _h_get_tag(self, a, q, b, p):
        return self.model.get_tag(a[0])

    def _h_delete_tag(self, a, q, b, p):
        return self.model.delete_tag(a[0])

    def _h_tag_resources(self, a, q, b, p):
        return self.model.tag_resources(a[0], b, add=True)

    def _h_untag_resources(self, a, q, b, p):
        return self.model.tag_resources(a[0], b, add=False)

    def _h_list_firewalls(self, a, q, b, p):
        return self._page("firewalls", self.model.list_firewalls(), q, p)

    def _h_create_firewall(self, a, q, b, p):
        return self.model.create_firewall(b)

    def _h_get_firewall(self, a, q, b, p):
        return self.model.get_firewall(a[0])

    def _h_update_firewall(self, a, q, b, p):
        return self.model.update_firewall(a[0], b)

    def _h_delete_firewall(self, a, q, b, p):
        return self.model.delete_firewall(a[0])

    def _h_firewall_add_droplets(self, a, q, b, p):
        return self.model.firewall_members(a[0], b, "droplet_ids", add=True)

    def _h_firewall_remove_droplets(self, a, q, b, p):
        return self.model.firewall_members(a[0], b, "droplet_ids", add=False)

    def _h_firewall_add_tags(self, a, q, b, p):
        return self.model.firewall_members(a[0], b, "tags", add=True)

    def _h_firewall_remove_tags(self, a, q, b, p):
        return self.model.firewall_members(a[0], b, "tags", add=False)

    def _h_list_vpcs(self, a, q, b, p):
        return self._page("vpcs", self.model.list_vpcs(), q, p)

    def _h_create_vpc(self, a, q, b, p):
        return self.model.create_vpc(b)

    def _h_get_vpc(self, a, q, b, p):
        return self.model.get_vpc(a[0])

    def _h_patch_vpc(self, a, q, b, p):
        return self.model.patch_vpc(a[0], b)

    def _h_delete_vpc(self, a, q, b, p):
        return self.model.delete_vpc(a[0])

    def _h_list_regions(self, a, q, b, p):
        return self._page("regions", [m.region_json(s) for s in m.REGIONS], q, p)

    def _h_list_sizes(self, a, q, b, p):
        return self._page("sizes", [m.size_json(s) for s in m.SIZES], q, p)

    def _h_list_images(self, a, q, b, p):
        images = [{"id": i, "slug": s, "name": s, "distribution": s.split("-")[0], "public": True,
                   "regions": list(m.REGIONS), "type": "base", "min_disk_size": 15}
                  for s, i in m.IMAGES.items()]
        return self._page("images", images, q, p)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator: DOEmulator

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, extra, delay = self.emulator.handle(self.command, self.path, self.headers,
                                                             body)
        if delay:
            time.sleep(delay)
        if payload is None:
            data, ctype = b"", None
        elif isinstance(payload, str):
            data, ctype = payload.encode(), "text/html; charset=utf-8"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json; charset=utf-8"
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format, *args) -> None:   # keep test output clean
        pass
