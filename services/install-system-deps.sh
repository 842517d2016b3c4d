#!/usr/bin/env bash
# Installs the system packages Ringmon's tests and cluster use, when missing:
# ZooKeeper, Prometheus tools, node_exporter, Alertmanager (Debian) and a JDK + Maven.
# Idempotent and quiet when everything is present.
set -euo pipefail
need=()
[ -d /usr/share/zookeeper ] || need+=(zookeeper)
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
command -v chromium >/dev/null || need+=(chromium)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
