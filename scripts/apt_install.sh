# Sourced by scripts/get_*.sh: `apt_install WHAT PACKAGE...` installs Debian packages where apt is
# available and we are root or may sudo without a password; it returns 1 (and installs nothing)
# otherwise, or when the install fails, so the caller goes on to its fallback.
apt_install() {
    local what=$1; shift
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    $sudo true 2>/dev/null || return 1
    echo "$what: installing Debian's $*"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
