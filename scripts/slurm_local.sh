#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (root, no systemd), for tests and workstation sweeps.
#   bash scripts/slurm_local.sh start    # install slurm-wlm + munge if missing, start, wait for the node
#   bash scripts/slurm_local.sh status   # daemons and sinfo; exit 0 only if the node is usable
#   bash scripts/slurm_local.sh stop     # stop the daemons this script started (by pid file)
# State, spool, logs and pid files live under $SLURM_LOCAL_DIR (default /tmp/slurm_local).
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/slurm_local}"
HOST="$(hostname -s)"
CONF=/etc/slurm/slurm.conf

die() { echo "slurm_local: cannot start: $*" >&2; exit 1; }
say() { echo "slurm_local: $*"; }

alive() {  # alive PIDFILE: the process named in PIDFILE is running
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || die "slurm-wlm/munge are missing and there is no apt-get to install them."
    say "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq >"$DIR/apt.log" 2>&1 || die "apt-get update failed (see $DIR/apt.log)."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >>"$DIR/apt.log" 2>&1 \
        || die "apt-get install slurm-wlm munge failed (see $DIR/apt.log)."
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f >/dev/null; } \
        || die "no /etc/munge/munge.key and it could not be created."
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid || die "munged did not start."
    cp /run/munge/munged.pid "$DIR/munged.pid"  # marks it as ours, for `stop`
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.25; done
    die "munged runs but credentials do not round-trip (munge -n | unmunge)."
}

write_conf() {
    local mem
    mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.95)}')
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" /etc/slurm
    cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on $HOST.
ClusterName=local
SlurmctldHost=$HOST
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120 s); 10 s is ample on one node
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    cp "$DIR/slurm.conf" "$CONF"
}

node_idle() {
    sinfo -h -N -n "$HOST" -o "%t" 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

start() {
    [[ $(id -u) -eq 0 ]] || die "run as root (the daemons run as root without systemd)."
    mkdir -p "$DIR"
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && node_idle; then
        say "already running on $HOST"; sinfo; return
    fi
    install
    start_munge
    write_conf
    alive "$DIR/slurmctld.pid" || slurmctld || die "slurmctld did not start (see $DIR/log/slurmctld.log)."
    alive "$DIR/slurmd.pid" || slurmd || die "slurmd did not start (see $DIR/log/slurmd.log)."
    for _ in $(seq 60); do
        if node_idle; then say "node $HOST is up"; sinfo; return; fi
        sleep 0.5
    done
    sinfo >&2 || true
    die "node $HOST did not become idle within 30 s (see $DIR/log/)."
}

stop() {
    local name
    for name in slurmd slurmctld munged; do
        if alive "$DIR/$name.pid"; then
            kill "$(cat "$DIR/$name.pid")"
            for _ in $(seq 40); do alive "$DIR/$name.pid" || break; sleep 0.25; done
            say "stopped $name"
        fi
        rm -f "$DIR/$name.pid"
    done
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if alive "$DIR/$name.pid"; then say "$name: running (pid $(cat "$DIR/$name.pid"))"
        else say "$name: not started by this script"; fi
    done
    if node_idle; then sinfo; else say "no usable node (sinfo cannot reach a cluster or the node is down)"; rc=1; fi
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
