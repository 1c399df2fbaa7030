#!/usr/bin/env bash
# Install the Debian packages Pantau needs when they are missing: as root with apt-get, otherwise
# print the command to run. Usage: debian-packages.sh run|test
set -euo pipefail

# GStreamer's RTSP server, run by the system python3, serves `pantau dev`'s test cameras
# (gstreamer1.0-x holds timeoverlay, their ticking clock).
run_packages=(postgresql-15 mosquitto mosquitto-clients python3-gi gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-x)
test_packages=("${run_packages[@]}" openssl chromium prometheus prometheus-alertmanager
  docker-compose caddy)

case "${1:-}" in
  run) wanted=("${run_packages[@]}") ;;
  test) wanted=("${test_packages[@]}") ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The machine's own PostgreSQL and Mosquitto services are not started or stopped by us.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
