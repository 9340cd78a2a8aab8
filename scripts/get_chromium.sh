#!/usr/bin/env bash
# Make a headless Chromium available for tests/test_ui_browser.py (the MLflow UI in a real browser).
#   1. a chromium (or chromium-browser, google-chrome) already on PATH is used;
#   2. where apt is available (and we are root or have sudo) install Debian's chromium package;
#   3. otherwise say what to install: the browser test then fails and names it.
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        echo "Chromium: using $(command -v "$b")"
        exit 0
    fi
done
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if $SUDO true 2>/dev/null; then
        echo "Chromium: installing Debian's chromium (headless, for the MLflow UI test)"
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
        command -v chromium >/dev/null 2>&1 && exit 0
    fi
fi
echo "Chromium: not found and could not be installed; install chromium (Debian/Ubuntu: apt-get install chromium)" >&2
exit 0  # the set-up goes on; tests/test_ui_browser.py fails with this message
