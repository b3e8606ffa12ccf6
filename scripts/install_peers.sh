#!/usr/bin/env bash
# Install the C log shippers that bench/peers.py compares logcap against.
#
#   * rsyslog    - installed normally with apt-get, but never started as a service:
#                  the benchmark runs its own rsyslogd in the foreground with a private
#                  config, so a system daemon would only steal CPU and grab /dev/log.
#   * syslog-ng  - syslog-ng-core Conflicts: rsyslog, so it cannot be apt-installed next
#                  to it. We `apt-get download` it plus any library it needs that is not
#                  installed, unpack with `dpkg -x` into a private prefix and add a
#                  wrapper that points the loader and the module path into that prefix.
#
# Idempotent and non-interactive; run as root on Debian bookworm. A second run only
# re-checks both binaries (a second or two, no apt calls).
#
# Environment:
#   LOGCAP_PEERS_PREFIX   where syslog-ng is unpacked (default /opt/logcap-peers)
#   LOGCAP_PEERS_FORCE=1  re-download and re-unpack syslog-ng even if it already works
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PREFIX="${LOGCAP_PEERS_PREFIX:-/opt/logcap-peers}"
SNG_ROOT="$PREFIX/syslog-ng"           # dpkg -x target (holds usr/, lib/, etc/ ...)
SNG_WRAPPER="$PREFIX/bin/syslog-ng"    # what bench/peers.py runs
RSYSLOGD=/usr/sbin/rsyslogd
# Other people may run apt at the same time: wait for the dpkg lock instead of failing.
APT_OPTS=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
          -o Dpkg::Options::=--force-confold)

log() { printf '[install_peers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v apt-get >/dev/null || die "apt-get not found (Debian bookworm expected)"

is_installed() {  # is_installed PKG -> 0 if dpkg considers PKG installed
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

apt_updated=0
apt_update_once() {
    if [[ $apt_updated -eq 0 ]]; then
        apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
        apt_updated=1
    fi
}

# ----------------------------------------------------------------------------- rsyslog

# PID of the rsyslogd system daemon if one is running (pidfile of Debian's default
# config). Only that daemon is ever stopped: a foreground rsyslogd started by a
# benchmark has its own pidfile and is left alone.
system_rsyslogd_pid() {
    local pidfile=/run/rsyslogd.pid pid
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$RSYSLOGD" ]] || return 1
    echo "$pid"
}

install_rsyslog() {
    if is_installed rsyslog && [[ -x $RSYSLOGD ]]; then
        log "rsyslog already installed"
        return
    fi
    local had_daemon=0 policy=/usr/sbin/policy-rc.d backup=""
    system_rsyslogd_pid >/dev/null && had_daemon=1

    # policy-rc.d exit 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke then
    # skip starting rsyslog.service from the postinst. Any existing policy is put back.
    if [[ -e $policy ]]; then
        backup=$(mktemp "$policy.logcap.XXXXXX")
        cp -p "$policy" "$backup"
    fi
    # shellcheck disable=SC2064  # expand now: the trap must restore *this* backup
    trap "if [[ -n '$backup' ]]; then mv -f '$backup' '$policy'; else rm -f '$policy'; fi" EXIT
    printf '#!/bin/sh\n# temporary, from logcap scripts/install_peers.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"

    log "installing rsyslog with apt-get (service start suppressed)"
    apt_update_once
    apt-get "${APT_OPTS[@]}" install --no-install-recommends rsyslog >/dev/null

    if [[ -n $backup ]]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi
    trap - EXIT

    # With systemd as init the unit would still be enabled for the next boot; the
    # benchmark never wants a system rsyslogd, so disable what we just installed.
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now rsyslog.service >/dev/null 2>&1 || true
    fi
    # Belt and braces: a daemon that appeared during the install is ours to stop.
    local pid
    if [[ $had_daemon -eq 0 ]] && pid=$(system_rsyslogd_pid); then
        log "stopping rsyslogd pid $pid started by the package install"
        kill "$pid" || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
}

# --------------------------------------------------------------------------- syslog-ng

write_sng_wrapper() {
    local moddir
    moddir=$(find "$SNG_ROOT/usr/lib/syslog-ng" -mindepth 1 -maxdepth 1 -type d \
             -name '[0-9]*' | sort -V | tail -n1)
    [[ -n $moddir ]] || die "no module directory under $SNG_ROOT/usr/lib/syslog-ng"
    mkdir -p "$(dirname "$SNG_WRAPPER")"
    # SYSLOGNG_PREFIX relocates the compiled-in /usr paths (modules, scl include dir);
    # --module-path is passed too so modules are found even if that ever changes.
    # `exec` keeps the daemon's PID equal to the PID the caller launched.
    cat >"$SNG_WRAPPER.tmp" <<EOF
#!/bin/sh
# Generated by logcap scripts/install_peers.sh: run the syslog-ng unpacked in $SNG_ROOT.
SYSLOGNG_PREFIX='$SNG_ROOT/usr'
LD_LIBRARY_PATH='$SNG_ROOT/usr/lib/syslog-ng:$SNG_ROOT/usr/lib/x86_64-linux-gnu:$SNG_ROOT/lib/x86_64-linux-gnu'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export SYSLOGNG_PREFIX LD_LIBRARY_PATH
exec '$SNG_ROOT/usr/sbin/syslog-ng' --module-path='$moddir' "\$@"
EOF
    chmod 755 "$SNG_WRAPPER.tmp"
    mv -f "$SNG_WRAPPER.tmp" "$SNG_WRAPPER"
}

syslog_ng_works() {
    [[ -x $SNG_WRAPPER ]] && "$SNG_WRAPPER" --version 2>/dev/null | grep -q 'affile'
}

# Library packages that PKG depends on and that are not installed on this host,
# recursively (a downloaded library can itself need a missing library).
missing_lib_deps() {
    local -a queue=("$1") seen=() out=()
    while ((${#queue[@]})); do
        local pkg=${queue[0]} dep
        queue=("${queue[@]:1}")
        while read -r dep; do
            [[ " ${seen[*]-} " == *" $dep "* ]] && continue
            seen+=("$dep")
            if ! is_installed "$dep"; then out+=("$dep"); queue+=("$dep"); fi
        done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts \
                   --no-breaks --no-replaces --no-enhances "$pkg" 2>/dev/null |
                 sed -nE 's/^ *\|?(Pre)?Depends: (lib[^ <>]+).*/\2/p' | sed 's/:.*//')
    done
    printf '%s\n' "${out[@]-}" | sed '/^$/d'
}

install_syslog_ng() {
    if [[ ${LOGCAP_PEERS_FORCE:-0} != 1 ]] && syslog_ng_works; then
        log "syslog-ng already unpacked in $SNG_ROOT"
        return
    fi
    apt_update_once
    local dl pkgs
    dl=$(mktemp -d /tmp/logcap-peers-dl.XXXXXX)
    # apt drops privileges to _apt for downloads; give it the directory to avoid a warning.
    chown _apt "$dl" 2>/dev/null || true
    mapfile -t pkgs < <(missing_lib_deps syslog-ng-core)
    log "downloading syslog-ng-core ${pkgs[*]-}"
    (cd "$dl" && apt-get -q -o DPkg::Lock::Timeout=300 download syslog-ng-core "${pkgs[@]}" \
        >/dev/null)

    # Unpack into a fresh directory and swap it in, so a failed run never leaves a
    # half-populated prefix behind.
    mkdir -p "$PREFIX"
    local stage="$SNG_ROOT.new"
    rm -rf "$stage"
    mkdir -p "$stage"
    local deb
    for deb in "$dl"/*.deb; do dpkg -x "$deb" "$stage"; done
    rm -rf "$dl" "$SNG_ROOT.old"
    [[ -e $SNG_ROOT ]] && mv "$SNG_ROOT" "$SNG_ROOT.old"
    mv "$stage" "$SNG_ROOT"
    rm -rf "$SNG_ROOT.old"
    write_sng_wrapper

    # Every ELF we ship must resolve all its libraries; otherwise say which are missing.
    local ldpath missing
    ldpath=$(sed -n "s/^LD_LIBRARY_PATH='\([^']*\)'.*/\1/p" "$SNG_WRAPPER")
    missing=$(find "$SNG_ROOT/usr/sbin/syslog-ng" "$SNG_ROOT/usr/lib/syslog-ng" -type f \
                \( -name '*.so' -o -name syslog-ng \) \
                -exec env LD_LIBRARY_PATH="$ldpath" ldd {} + 2>/dev/null |
              awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
    [[ -z $missing ]] || die "syslog-ng libraries still missing: $missing"
    syslog_ng_works || die "$SNG_WRAPPER --version failed"
}

install_rsyslog
install_syslog_ng

# rsyslogd must be runnable and no system rsyslogd may be left behind by us.
"$RSYSLOGD" -v >/dev/null || die "$RSYSLOGD -v failed"
if pid=$(system_rsyslogd_pid); then
    log "note: a system rsyslogd (pid $pid) is running; it was not started by this script"
fi

cat <<EOF
rsyslog:   $RSYSLOGD  ($("$RSYSLOGD" -v | head -n1))
syslog-ng: $SNG_WRAPPER  ($("$SNG_WRAPPER" --version | head -n1))
           unpacked in $SNG_ROOT
EOF
