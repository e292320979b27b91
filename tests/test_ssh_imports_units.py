"""paramiko is imported without invoke (its ssh_config `Match exec` support, which swarmsmith
never reads, is a third of paramiko's import time); when fabric moves a file, invoke is given
back and ssh_config's `Match exec` works again. Each check runs in a new interpreter."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _py(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_ssh_stack_and_the_docker_sdk_load_without_invoke():
    out = _py("import sys\n"
              "from provision.remote.ssh import load_ssh_stack\n"
              "from provision.engine_api.transport import load_docker_sdk\n"
              "p = load_ssh_stack(); load_docker_sdk()\n"
              "print('invoke' in sys.modules, sys.modules.get('invoke', 0) is None,"
              " hasattr(p, 'SSHClient'))")
    assert out == "False False True"      # not loaded, and no placeholder left behind


def test_fabric_gives_invoke_back_to_ssh_config():
    out = _py("from provision.remote.ssh import load_ssh_stack, fabric_connection\n"
              "p = load_ssh_stack(); fabric_connection()\n"
              "c = p.SSHConfig.from_text('Match exec \"true\"\\n  User bob\\n')\n"
              "print(c.lookup('h').get('user'))")
    assert out == "bob"
