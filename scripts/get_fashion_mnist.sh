#!/usr/bin/env bash
# Make Fashion-MNIST available for the quickstart and the tests.
#   1. Debian's package dataset-fashion-mnist puts the four IDX files in /usr/share/datasets/fashion-mnist
#      (what the loader reads by default);
#   2. where apt is available (and we are root or have sudo) install that package;
#   3. otherwise download with torchvision into ./data (the loader's fallback location).
set -euo pipefail
. "$(dirname "$0")/apt_install.sh"
SYSTEM_DIR=/usr/share/datasets/fashion-mnist
PY=${PY:-.venv/bin/python}

if ls "$SYSTEM_DIR"/train-images-idx3-ubyte* >/dev/null 2>&1; then
    echo "Fashion-MNIST: using $SYSTEM_DIR"
    exit 0
fi
if apt_install Fashion-MNIST dataset-fashion-mnist && ls "$SYSTEM_DIR"/train-images-idx3-ubyte* >/dev/null 2>&1; then
    exit 0
fi
echo "Fashion-MNIST: downloading with torchvision into ./data"
"$PY" -c "import torchvision; [torchvision.datasets.FashionMNIST('data', train=t, download=True) for t in (True, False)]"
