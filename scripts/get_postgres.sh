#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for tests/test_postgres_store.py, which runs
# `mlflow server` on PostgreSQL as cluster/mlflow-server.yaml does. Only the binaries: the test
# starts its own throwaway cluster (initdb in a temporary directory, `postgres` on a free port,
# as the unprivileged user nobody when run as root) and stops it; no system service is used.
#   1. binaries already under /usr/lib/postgresql/<version>/bin are used;
#   2. where apt is available (and we are root or have sudo) install Debian's postgresql package;
#   3. otherwise say what to install: the test then fails and names it.
set -euo pipefail
. "$(dirname "$0")/apt_install.sh"
found() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; }
if found; then
    echo "PostgreSQL: using $(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)"
    exit 0
fi
if apt_install PostgreSQL postgresql && found; then exit 0; fi
echo "PostgreSQL: not found and could not be installed; install it (Debian/Ubuntu: apt-get install postgresql)" >&2
exit 0  # the set-up goes on; tests/test_postgres_store.py fails with this message
