"""The fake engine of every tier: the HTTP call EngineAPI makes (requests' public
Session.request, as on docker.APIClient) answered by `_post_json(path, data, params)` /
`_get(path)` routes (RequestRoutes), and FakeEngine, an in-memory swarm behind them."""
from __future__ import annotations

import copy


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


DIGEST = "@sha256:" + "c" * 64


MANAGER_TOKEN = "SWMTKN-1-fakemanagertoken"


class FakeEngine(RequestRoutes):
    """The fake engine: an in-memory swarm with the APIClient methods the adapter
    (provision/engine_api/adapter.py) uses. Stored specs get what a 20.10 daemon adds, so
    'unchanged' is tested for real. Every POST is kept with its headers (`posts`), every GET
    too (`gets`: a registry's distribution answer is `dist`, or `error` is raised)."""

    def __init__(self, nodes=3, *, dist=None, error=None):
        self.services_, self.networks_, self.secrets_, self.configs_ = {}, {}, {}, {}
        self.calls = []
        self.posts, self.gets, self.dist, self.error = [], [], dist, error
        self.n = 0
        self.node_list = [{"Status": {"State": "ready"}, "Spec": {"Availability": "active"}}
                          for _ in range(nodes)]

    def _id(self):
        self.n += 1
        return f"id{self.n:04d}"

    def inspect_swarm(self):
        return {"ID": "swarm0001", "JoinTokens": {"Manager": MANAGER_TOKEN, "Worker": "w"}}

    def _url(self, path, *args):
        return path.format(*args)

    def _result(self, resp, json=False):
        return resp

    def _daemon(self, spec):
        s = copy.deepcopy(spec)
        tt = s["TaskTemplate"]
        cs = tt["ContainerSpec"]
        cs["Image"] = cs["Image"] + DIGEST if "@" not in cs["Image"] else cs["Image"]
        cs["Isolation"] = "default"
        cs["Privileges"] = {"CredentialSpec": None, "SELinuxContext": None,
                            **(cs.get("Privileges") or {})}
        cs.setdefault("StopGracePeriod", 10 * 10**9)
        tt.setdefault("ForceUpdate", 0)
        tt["Runtime"] = "container"
        tt.setdefault("Resources", {"Limits": {}, "Reservations": {}})
        tt.setdefault("RestartPolicy", {"Condition": "any", "Delay": 5 * 10**9, "MaxAttempts": 0})
        by_name = {n["Name"]: i for i, n in self.networks_.items()}
        for n in tt.get("Networks") or []:
            n["Target"] = by_name.get(n["Target"], n["Target"])
        m = s.setdefault("Mode", {"Replicated": {}})
        if "Replicated" in m:
            m["Replicated"].setdefault("Replicas", 1)
        ep = s.setdefault("EndpointSpec", {})
        ep.setdefault("Mode", "vip")
        for p in ep.get("Ports") or []:
            p.setdefault("Protocol", "tcp")
            p.setdefault("PublishMode", "ingress")
        return s

    def _get(self, url, headers=None):
        self.gets.append((url, headers))
        if self.error:
            raise self.error
        return self.dist

    def _post_json(self, url, data=None, params=None, headers=None):
        self.posts.append((url, copy.deepcopy(data), params, headers))
        self.calls.append(("POST", url))
        parts = url.strip("/").split("/")
        if parts[0] == "networks":
            i = self._id()
            self.networks_[i] = {"Id": i, "Scope": "swarm", **copy.deepcopy(data)}
            return {"Id": i}
        store = {"services": self.services_, "secrets": self.secrets_, "configs": self.configs_}[parts[0]]
        if parts[1] == "create":
            i = self._id()
            spec = self._daemon(data) if parts[0] == "services" else copy.deepcopy(data)
            if parts[0] == "secrets":
                spec.pop("Data", None)      # swarm never returns secret data
            store[i] = {"ID": i, "Version": {"Index": 1}, "Spec": spec}
            return {"ID": i}
        obj = store[parts[1]]
        assert params["version"] == obj["Version"]["Index"], "out of sequence"
        if parts[0] == "services":
            obj["Spec"] = self._daemon(data)
        else:
            obj["Spec"]["Labels"] = copy.deepcopy(data["Labels"])
        obj["Version"]["Index"] += 1
        return {}

    def services(self, filters=None):
        return copy.deepcopy(list(self.services_.values()))

    def networks(self, filters=None):
        return copy.deepcopy(list(self.networks_.values()))

    def secrets(self, filters=None):
        return copy.deepcopy(list(self.secrets_.values()))

    def configs(self, filters=None):
        return copy.deepcopy(list(self.configs_.values()))

    def nodes(self, filters=None):
        return self.node_list

    def _remove(self, store, i):
        self.calls.append(("DELETE", i))
        del store[i]

    def remove_service(self, i):
        self._remove(self.services_, i)

    def remove_network(self, i):
        self._remove(self.networks_, i)

    def remove_secret(self, i):
        self._remove(self.secrets_, i)

    # the stack lock (provision/swarm/lock.py) is a config; not counted in self.calls
    def create_config(self, name, data, labels=None, templating=None):
        if any(c["Spec"]["Name"] == name for c in self.configs_.values()):
            raise RuntimeError("409 Conflict: config name exists")
        i = self._id()
        self.configs_[i] = {"ID": i, "Version": {"Index": 1},
                            "Spec": {"Name": name, "Labels": labels or {}}}
        return {"ID": i}

    def remove_config(self, i):
        if self.configs_.get(i, {}).get("Spec", {}).get("Name", "").startswith("swarmsmith-lock-"):
            self.configs_.pop(i)
            return
        self._remove(self.configs_, i)
