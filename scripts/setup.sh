#!/usr/bin/env bash
# Fresh-machine setup for swarmsmith (Debian 12, root): apt packages the lab and the tests need,
# then the project and its Python dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker.io openssh-server openssh-client iproute2 iptables busybox-static util-linux
              docker-registry procps curl mmdebstrap apt-cacher-ng tmux
              qemu-system-x86 qemu-utils genisoimage e2fsprogs)   # the last line: VM lab hosts
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# the lab starts engines over SSH, never on the machine itself: make sure no service auto-started
if command -v systemctl >/dev/null && systemctl is-active -q docker 2>/dev/null; then
  systemctl disable --now docker.socket docker.service containerd.service >/dev/null 2>&1 || true
fi
# the lab starts its own apt-cacher-ng per lab (bound to the lab's bridge) when a lab uses
# `image: debian-12`; the package's machine-wide service would hold port 3142 on every address
if [ -x /etc/init.d/apt-cacher-ng ]; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now apt-cacher-ng >/dev/null 2>&1 || true
  else
    /etc/init.d/apt-cacher-ng stop >/dev/null 2>&1 || true
  fi
fi
# Debian's docker-registry package may start a registry on the machine; the lab runs its own
if [ -x /etc/init.d/docker-registry ] && [ ! -d /run/systemd/system ]; then
  /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -E '^(WARNING|  )' || true
python3 -c "import cli, provision, stacks, inventory"
# byte-compiled now, as pip does for a regular install: every command would otherwise compile
# its ~60 modules again (about 0.1 s) where PYTHONDONTWRITEBYTECODE keeps Python from caching
python3 -m compileall -q cli.py provision stacks inventory >/dev/null
echo "setup: ok"
