#!/usr/bin/env bash
# A real SLURM on one machine for tests: munge + slurmctld + two slurmd "nodes" (n1, n2).
#
#   slurm/local_cluster.sh start    # installs Debian's slurm-wlm + munge if missing (root), starts
#   slurm/local_cluster.sh env      # prints the exports a shell needs (SLURM_CONF, PATH)
#   slurm/local_cluster.sh status
#   slurm/local_cluster.sh stop     # stops every daemon it started, by PID
#
# Everything lives in $VDI_SLURM_DIR (default /tmp/vdi-slurm). Works without systemd or cgroups
# (proctrack/linuxproc, task/none) and without accounting: a small `sacct` stand-in answering
# from squeue lets submitit see finished and dead jobs.
set -euo pipefail

DIR=${VDI_SLURM_DIR:-/tmp/vdi-slurm}
HOST=$(hostname -s)
CPUS_PER_NODE=${VDI_SLURM_CPUS_PER_NODE:-1}

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "slurm-wlm and munge are missing; install them as root: apt-get install slurm-wlm munge slurm-client" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge slurm-client >/dev/null
}

write_config() {
    mkdir -p "$DIR"/{munge,state,log,run,bin}
    mkdir -p "$DIR"/spool/n1 "$DIR"/spool/n2
    chmod 755 "$DIR/munge"
    if [ ! -f "$DIR/munge.key" ]; then
        dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge.key" status=none
        chmod 400 "$DIR/munge.key"
    fi
    cat > "$DIR/slurm.conf" <<EOF
ClusterName=vdi-local
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
CryptoType=crypto/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
CommunicationParameters=NoInAddrAny
MailProg=/bin/true
MinJobAge=300
ReturnToService=2
KillWait=30
NodeName=n1 NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=17001 CPUs=${CPUS_PER_NODE} State=UNKNOWN
NodeName=n2 NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=17002 CPUs=${CPUS_PER_NODE} State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    # sacct stand-in: submitit polls `sacct -o JobID,State,NodeList --parsable2 -j ids`
    cat > "$DIR/bin/sacct" <<'EOF'
#!/usr/bin/env bash
ids=""
while [ $# -gt 0 ]; do
    case "$1" in
        -j) ids="$2"; shift 2 ;;
        -j*) ids="${1#-j}"; shift ;;
        *) shift ;;
    esac
done
echo "JobID|State|NodeList"
if [ -n "$ids" ]; then
    squeue -h -t all -j "$ids" -o "%i|%T|%N" 2>/dev/null || true
else
    squeue -h -t all -o "%i|%T|%N" 2>/dev/null || true
fi
EOF
    chmod +x "$DIR/bin/sacct"
}

print_env() {
    echo "export SLURM_CONF=$DIR/slurm.conf"
    echo "export PATH=$DIR/bin:\$PATH"
}

start() {
    install_packages
    if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        echo "local SLURM already running ($DIR)"
        return
    fi
    write_config
    export SLURM_CONF=$DIR/slurm.conf
    munged --key-file="$DIR/munge.key" --socket="$DIR/munge/munge.socket.2" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed" --force
    slurmctld -D -f "$SLURM_CONF" >"$DIR/log/slurmctld.out" 2>&1 &
    echo $! > "$DIR/run/slurmctld.launcher.pid"
    for node in n1 n2; do
        slurmd -D -N "$node" -f "$SLURM_CONF" >"$DIR/log/slurmd-$node.out" 2>&1 &
        echo $! > "$DIR/run/slurmd-$node.launcher.pid"
    done
    for _ in $(seq 1 60); do
        if sinfo -h -o "%T" 2>/dev/null | grep -q idle && [ "$(sinfo -h -N -o "%T" | grep -c idle)" -ge 2 ]; then
            echo "local SLURM up: 2 nodes (n1, n2) in partition debug; state in $DIR"
            return
        fi
        sleep 0.5
    done
    echo "local SLURM did not come up; logs in $DIR/log" >&2
    tail -n 20 "$DIR"/log/*.log >&2 || true
    exit 1
}

stop() {
    for pidfile in "$DIR"/run/slurmd-n1.launcher.pid "$DIR"/run/slurmd-n2.launcher.pid \
        "$DIR"/run/slurmctld.launcher.pid "$DIR"/run/munged.pid; do
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    # job steps started by the emulated nodes (slurmstepd) die with their daemons; catch stragglers
    pkill -f "slurmstepd: \[" 2>/dev/null || true
    echo "local SLURM stopped"
}

status() {
    export SLURM_CONF=$DIR/slurm.conf
    sinfo -N -l || true
    squeue -t all || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) print_env ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
