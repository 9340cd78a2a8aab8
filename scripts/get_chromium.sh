#!/usr/bin/env bash
# Make a headless Chromium available for tests/test_ui_browser.py (the MLflow UI in a real browser).
#   1. a chromium (or chromium-browser, google-chrome) already on PATH is used;
#   2. where apt is available (and we are root or have sudo) install Debian's chromium package;
#   3. otherwise say what to install: the browser test then fails and names it.
set -euo pipefail
. "$(dirname "$0")/apt_install.sh"
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        echo "Chromium: using $(command -v "$b")"
        exit 0
    fi
done
if apt_install Chromium chromium fonts-dejavu-core && command -v chromium >/dev/null 2>&1; then exit 0; fi
echo "Chromium: not found and could not be installed; install chromium (Debian/Ubuntu: apt-get install chromium)" >&2
exit 0  # the set-up goes on; tests/test_ui_browser.py fails with this message
