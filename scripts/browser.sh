#!/usr/bin/env bash
# Make sure the headless browser of the playground's end-to-end test is installed:
# Debian's chromium and its chromium-driver, at /usr/bin/chromium and /usr/bin/chromedriver.
# Installs them with apt-get where they are missing and this runs as root; otherwise fails
# clearly (the tests never skip for want of them, and never download a browser themselves).
set -euo pipefail

CHROMIUM="${CHARNN_TEST_CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${CHARNN_TEST_CHROMEDRIVER:-/usr/bin/chromedriver}"

present() { [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; }

if ! present; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium and chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver
  fi
fi
if ! present; then
  echo "error: the browser test needs Chromium at $CHROMIUM and ChromeDriver at $CHROMEDRIVER." >&2
  echo "       Install them as root: apt-get install chromium chromium-driver" >&2
  echo "       (or point CHARNN_TEST_CHROMIUM and CHARNN_TEST_CHROMEDRIVER at a matching pair)." >&2
  exit 1
fi
