"""The HTTP call EngineAPI makes (requests' public Session.request, as on docker.APIClient),
answered by a fake client's `_post_json(path, data, params)` / `_get(path)` routes."""
from __future__ import annotations


class FakeResponse:
    def __init__(self, data):
        self.status_code = 200
        self._data = data
        self.content = b"" if data in (None, "") else b"{}"

    def json(self):
        if not self.content:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        return self._data


class RequestRoutes:
    base_url = "http+docker://fake"
    api_version = "1.41"

    def request(self, method, url, json=None, params=None, headers=None, **_):
        path = url.split(f"/v{self.api_version}", 1)[1]
        extra = {"headers": headers} if headers else {}
        if method == "GET":
            return FakeResponse(self._get(path, **extra))
        return FakeResponse(self._post_json(path, data=json, params=params, **extra))
