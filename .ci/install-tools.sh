#!/bin/sh
# Installs the tools the deployment tests run (Debian packages): docker-compose for
# `docker-compose config -q`, prometheus for the real server and promtool. Idempotent: does
# nothing when they are already on PATH.
set -eu

missing=""
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  missing="$missing prometheus"
fi
[ -z "$missing" ] && exit 0

echo "install-tools: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO apt-get install -y -qq --no-install-recommends $missing
