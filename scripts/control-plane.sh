#!/usr/bin/env bash
# Makes sure an etcd and a kube-apiserver binary exist for the end-to-end tests, and prints
# `export ETCD=...` and `export KUBE_APISERVER=...` for the caller to eval.
#
# - ETCD and KUBE_APISERVER, when set to executables, are used as they are.
# - etcd otherwise comes from Debian's etcd-server package.
# - kube-apiserver otherwise is built from Debian's kubernetes source package (bookworm,
#   Kubernetes 1.20.2) with Debian's golang-go, and cached under
#   ${XDG_CACHE_HOME:-~/.cache}/vmruntime-gate/ by source version, so later runs skip the build.
#   The vendored reflect2 1.0.1 and json-iterator 1.1.10 crash the API server (SIGSEGV in
#   mapiterinit, seen when a custom resource is created) when built with Debian's Go 1.19.
#   The build therefore swaps in Debian's packaged reflect2 1.0.2 and json-iterator 1.1.12.
#
# Progress goes to standard error. Installing packages needs root (apt-get).
set -euo pipefail

log() { printf 'control-plane: %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/vmruntime-gate"
# Changes whenever the build recipe changes, so that a binary built the old way is not reused.
recipe="go-reflect2-1.0.2"
apt_updated=""
build_dir=""

remove_build_dir() {
  if [[ -n "$build_dir" ]]; then
    rm -rf "$build_dir"
  fi
}
trap remove_build_dir EXIT

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    fail "missing Debian packages ($*) and not root; install them, or set ETCD and KUBE_APISERVER to existing binaries"
  fi
  if [[ -z "$apt_updated" ]]; then
    log "apt-get update"
    apt-get update -q >&2 || fail "apt-get update failed"
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 || fail "apt-get install $* failed"
}

has_deb_src() {
  grep -Rqs -e '^deb-src ' -e '^Types:.*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/
}

ensure_etcd() {
  if [[ -n "${ETCD:-}" ]]; then
    [[ -x "$ETCD" ]] || fail "ETCD=$ETCD is not an executable file; unset it or point it at an etcd binary"
    return
  fi
  if ! command -v etcd >/dev/null; then
    apt_install etcd-server
  fi
  ETCD=$(command -v etcd)
}

ensure_kube_apiserver() {
  if [[ -n "${KUBE_APISERVER:-}" ]]; then
    [[ -x "$KUBE_APISERVER" ]] || fail "KUBE_APISERVER=$KUBE_APISERVER is not an executable file; unset it or point it at a kube-apiserver binary"
    return
  fi

  local missing=()
  command -v go >/dev/null || missing+=(golang-go)
  command -v rsync >/dev/null || missing+=(rsync)
  command -v jq >/dev/null || missing+=(jq)
  command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
  [[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] || missing+=(golang-github-modern-go-reflect2-dev)
  [[ -d /usr/share/gocode/src/github.com/json-iterator/go ]] || missing+=(golang-github-json-iterator-go-dev)
  if ! has_deb_src; then
    log "adding a deb-src entry for Debian bookworm main"
    [[ $(id -u) -eq 0 ]] || fail "no deb-src entry in the apt sources and not root; set KUBE_APISERVER to an existing binary"
    cat > /etc/apt/sources.list.d/vmruntime-gate-src.sources <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    apt_updated=""
  fi
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
  elif [[ -z "$apt_updated" ]] && ! apt-cache showsrc kubernetes >/dev/null 2>&1; then
    apt-get update -q >&2 || fail "apt-get update failed"
    apt_updated=1
  fi

  local version
  version=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ { print $2; exit }')
  [[ -n "$version" ]] || fail "apt-cache showsrc kubernetes found no source package; check the deb-src entry"
  local cached="$cache_root/kube-apiserver-$version-$recipe/kube-apiserver"
  if [[ -x "$cached" ]]; then
    log "using cached $cached"
    KUBE_APISERVER=$cached
    return
  fi

  build_dir=$(mktemp -d)
  local work=$build_dir
  log "downloading the kubernetes $version source package"
  (cd "$work" && apt-get source -q "kubernetes=$version" >&2) || fail "apt-get source kubernetes=$version failed"
  local tree
  tree=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
  [[ -n "$tree" ]] || fail "apt-get source left no kubernetes-* folder in $work"

  local package
  for package in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -f "$tree/vendor/$package"/*.go "$tree/vendor/$package"/*.s
    rsync -a --exclude '*_test.go' --exclude '*_tests/' --exclude 'extra/' --exclude 'go.mod' --exclude 'go.sum' \
      "/usr/share/gocode/src/$package/" "$tree/vendor/$package/"
  done

  log "building kube-apiserver (about six minutes on two cores)"
  local started=$SECONDS
  mkdir -p "$tree/.go/src/k8s.io"
  ln -sfn "$tree" "$tree/.go/src/k8s.io/kubernetes"
  (cd "$tree/.go/src/k8s.io/kubernetes" && GOPATH="$tree/.go" CGO_ENABLED=0 make WHAT=cmd/kube-apiserver >&2) \
    || fail "building kube-apiserver failed; see the output above"
  local built
  built=$(find "$tree/_output" -type f -name kube-apiserver -perm -u+x | head -n 1)
  [[ -n "$built" ]] || fail "the build finished but left no kube-apiserver binary under $tree/_output"
  mkdir -p "$(dirname "$cached")"
  cp "$built" "$cached.tmp" && mv "$cached.tmp" "$cached"
  log "built and cached $cached in $((SECONDS - started)) s"
  KUBE_APISERVER=$cached
}

ensure_etcd
ensure_kube_apiserver
command -v kubectl >/dev/null || fail "kubectl not found on PATH; install kubectl"
printf 'export ETCD=%q\nexport KUBE_APISERVER=%q\n' "$ETCD" "$KUBE_APISERVER"
