#!/usr/bin/env bash
# Installs the Debian packages the test suites and benchmarks use (needs root).
# Services are not started by the packages' install scripts: the tests start their own.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: needs root (apt-get); run it with sudo" >&2
  exit 1
fi
# Keep package post-install scripts from starting system services (dnsmasq, nginx, etcd, unbound...).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  iptables iproute2 util-linux bind9-dnsutils dnsmasq-base unbound etcd-server nginx-light prometheus \
  wrk dnsperf haproxy curl procps ca-certificates chromium \
  openssl tcpdump g++ make python3 nghttp2-client nghttp2-server redis-server redis-tools >/dev/null
echo "install-test-deps: done"
