"""Images from the Docker engine on this machine (DOCKER_HOST, else the default socket),
saved to a `docker save` archive for `images push`. The only module that talks to the local
engine; the docker SDK does the talking."""
from __future__ import annotations

import os
import tempfile

from ..base.errors import InputError, SwarmsmithError


class NoLocalEngineError(SwarmsmithError):
    pass


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client(timeout: int = 300):
    import docker
    try:
        c = docker.APIClient(**docker.utils.kwargs_from_env(), version="auto", timeout=timeout)
        c.ping()
        return c
    except Exception as e:
        reason = str(e).splitlines()[0][:160]
        raise NoLocalEngineError(
            f"no local Docker engine answers at {_where()} ({reason}); start one or set "
            "DOCKER_HOST, or push a `docker save` archive instead: swarmsmith images push "
            "--file IMAGE.tar") from None


def save(images: list[str], out_dir: str | None = None, api=None) -> str:
    """Save `images` (names or IDs, all in one archive) to a file; returns its path.
    InputError naming the image when the local engine does not have it."""
    api = api or client()
    for name in images:
        try:
            api.inspect_image(name)
        except Exception as e:
            if getattr(e, "status_code", None) == 404 or "No such image" in str(e):
                raise InputError(f"image {name} is not in the local engine at {_where()}") \
                    from None
            raise SwarmsmithError(f"local engine: inspect image {name}: {e}") from None
    fd, path = tempfile.mkstemp(prefix="swarmsmith-save-", suffix=".tar", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            # GET /images/get?names=A&names=B: all images in one archive, as `docker save A B`
            # (the SDK's get_image takes one), through the client's public requests interface
            resp = api.get(f"{api.base_url}/v{api.api_version}/images/get",
                           params={"names": images}, stream=True,
                           timeout=getattr(api, "timeout", None))
            resp.raise_for_status()
            for chunk in resp.iter_content(1 << 20):
                f.write(chunk)
    except BaseException as e:
        os.unlink(path)
        if isinstance(e, Exception) and not isinstance(e, SwarmsmithError):
            raise SwarmsmithError(f"local engine: docker save {' '.join(images)}: {e}") from None
        raise
    return path
