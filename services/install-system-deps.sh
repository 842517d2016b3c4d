#!/usr/bin/env bash
# Installs the system packages Ringmon's tests and cluster use, when missing:
# ZooKeeper, Prometheus tools, node_exporter, Alertmanager, VictoriaMetrics (bench/peers.py)
# (Debian) and a JDK + Maven.
# Idempotent and quiet when everything is present. Installing needs root (or sudo).
# When another program holds the package manager's lock, waits for it (up to
# RINGMON_APT_LOCK_WAIT seconds, default 600) and says which lock and process it waits for.
set -euo pipefail
need=()
[ -d /usr/share/zookeeper ] || need+=(zookeeper)
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
command -v chromium >/dev/null || need+=(chromium)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
[ ${#need[@]} -gt 0 ] || exit 0

SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "installing ${need[*]} needs root: run 'make system-deps' as root or install sudo" >&2; exit 1; }
  SUDO=(sudo)
fi
LOCK_WAIT_S=${RINGMON_APT_LOCK_WAIT:-600}

# apt-get "$@", retried while another program holds a package manager lock (apt fails at
# once then, and its message names the lock and the process holding it), at most LOCK_WAIT_S.
apt_get() {
  local log deadline=$((SECONDS + LOCK_WAIT_S)) said=-30 held
  log=$(mktemp)
  until "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq "$@" >"$log" 2>&1; do
    held=$(grep -m1 -o 'Could not get lock.*' "$log" || true)
    if [ -z "$held" ] || [ "$SECONDS" -ge "$deadline" ]; then
      cat "$log" >&2
      rm -f "$log"
      [ -z "$held" ] || echo "gave up waiting ${LOCK_WAIT_S}s for the package manager lock" >&2
      return 1
    fi
    if [ $((SECONDS - said)) -ge 30 ]; then
      echo "waiting for the package manager ($((deadline - SECONDS))s left): $held"
      said=$SECONDS
    fi
    sleep 2
  done
  rm -f "$log"
}

echo "installing system packages: ${need[*]}"
apt_get update
apt_get install -y --no-install-recommends "${need[@]}"
