#!/usr/bin/env bash
# Installs what Flotilla's build, tests and benchmarks need on a fresh Debian 12 machine (as
# root). Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v busybox >/dev/null || need_apt+=(busybox-static)
command -v curl >/dev/null || need_apt+=(curl)
# The load balancer tests make certificates for HTTPS listeners.
command -v openssl >/dev/null || need_apt+=(openssl)
command -v runc >/dev/null || need_apt+=(runc)
command -v tini-static >/dev/null || need_apt+=(tini)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
# The shared scratch filesystem (FLOTILLA_SHARED_SCRATCH=1): one btrfs, a subvolume per task.
command -v mkfs.btrfs >/dev/null || need_apt+=(btrfs-progs)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
# The store's durability test reads the fsyncs of a child process with strace.
command -v strace >/dev/null || need_apt+=(strace)
# The builtin OCI runtime compiles seccomp filters with libseccomp (linked at build time).
[ -e /usr/include/seccomp.h ] || need_apt+=(libseccomp-dev)
# The etcd store backend: its tests run real etcd members, and etcd-client's build needs protoc.
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# EKS: the tests drive clusters with kubectl (1.32 comes with these machines; Debian's client,
# 1.20, matches the control plane the tests launch) and unpack that control plane with xz.
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
command -v xz >/dev/null || need_apt+=(xz-utils)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need_apt[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian's etcd-server package starts a single-member etcd on 2379 where an init system runs;
# Flotilla's tests start their own members on free ports and never use it, so stop it.
if [ "$(id -u)" = 0 ] && command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi

# The TLS registry tests serve HTTPS on a non-loopback IPv4 address of this machine (clients
# dial loopback registries over plain HTTP), and scripts/test.sh makes a missing one a failure.
# A machine with none (no network at all) gets one, a documentation address on a veth pair
# (veth because task networking needs it anyway; the dummy driver is not always there).
if [ "$(id -u)" = 0 ] && ! ip -4 -o addr show scope global | grep -q inet; then
  echo "no non-loopback IPv4 address: adding 198.51.100.7/32 on flotilla-tls0 for the TLS tests"
  ip link show flotilla-tls0 >/dev/null 2>&1 || ip link add flotilla-tls0 type veth peer name flotilla-tls1
  ip addr replace 198.51.100.7/32 dev flotilla-tls0
  ip link set flotilla-tls1 up
  ip link set flotilla-tls0 up
fi

# ECS Exec's tests drive AWS's own Session Manager plugin (what `aws ecs execute-command`
# runs). It is not packaged for Debian; the workplace keeps a build of AWS's source beside the
# project (../shared/tools, with its licences). FLOTILLA_SSM_PLUGIN names another copy.
if ! command -v session-manager-plugin >/dev/null; then
  plugin=${FLOTILLA_SSM_PLUGIN:-../shared/tools/session-manager-plugin}
  if [ -x "$plugin" ] && [ "$(id -u)" = 0 ]; then
    install -m 0755 "$plugin" /usr/local/bin/session-manager-plugin
  else
    echo "session-manager-plugin not found (looked on PATH and at $plugin): the ECS Exec tests" \
      "will fail; set FLOTILLA_SSM_PLUGIN to AWS's plugin binary" >&2
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: Flotilla needs Rust 1.95 (install it with rustup, then rerun)" >&2
  exit 1
fi

if ! python3 -c 'import awscli, boto3, moto, pytest, cryptography, kubernetes' 2>/dev/null || ! command -v aws >/dev/null; then
  echo "installing Python test clients (awscli, boto3, moto, pytest, cryptography, kubernetes)"
  python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
fi
