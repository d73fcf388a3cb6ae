#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, everything in one folder: its own MUNGE key and
# daemon, slurm.conf, state, spool and logs. For trying `gengbao schedule --emit slurm` on
# one machine, and for the test that submits the emitted script to a real Slurm.
#
#   scripts/slurm-local.sh start DIR [CTLD_PORT SLURMD_PORT]   # prints the SLURM_CONF to export
#   scripts/slurm-local.sh stop DIR
#
# Needs root (slurmd starts jobs as their user) and Debian's slurmctld, slurmd, slurm-client
# and munge (scripts/setup.sh installs them). Exit status 2: this machine cannot start one
# (not root, or a program missing), with the reason on stderr.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR [CTLD_PORT SLURMD_PORT]" >&2; exit 64; }
[ $# -ge 2 ] || usage
action=$1
dir=$(realpath -m "$2")

cannot() { echo "slurm-local: cannot start a cluster here: $*" >&2; exit 2; }

# Whether the pid in file $1 is a live process named $2 (never a stale file's reused pid).
alive() {
  [ -e "$1" ] || return 1
  local pid
  pid=$(cat "$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

case "$action" in
start)
  [ "$(id -u)" -eq 0 ] || cannot "not root (slurmd must start jobs as their user)"
  for p in munged slurmctld slurmd sbatch scontrol sinfo squeue scancel; do
    command -v "$p" >/dev/null || cannot "$p not found (scripts/setup.sh installs it)"
  done
  ctld_port=${3:-16817}
  slurmd_port=${4:-16818}
  case "$dir" in *[[:space:],]*)
    echo "slurm-local: $dir: a folder without spaces or commas, please (slurm.conf lists paths)" >&2
    exit 64 ;;
  esac
  # MUNGE's socket path must fit a Unix socket address.
  if [ "${#dir}" -gt 90 ]; then
    echo "slurm-local: $dir: a shorter folder path, please (at most 90 bytes)" >&2
    exit 64
  fi
  if alive "$dir/slurmctld.pid" slurmctld; then
    echo "slurm-local: a cluster already runs in $dir (stop it first: $0 stop $dir)" >&2
    exit 1
  fi
  mkdir -p "$dir/state" "$dir/spool"
  chmod 755 "$dir"
  # MUNGE: a fresh key for this cluster only, its socket in the folder.
  if [ ! -e "$dir/munge.key" ]; then
    head -c 1024 /dev/urandom > "$dir/munge.key"
    chmod 400 "$dir/munge.key"
  fi
  munged --force --key-file="$dir/munge.key" --socket="$dir/munge.sock" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  memory=$(awk '/^MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
  host=$(hostname -s)
  cat > "$dir/slurm.conf" <<EOF
ClusterName=gengbao-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# A job whose dependency can no longer be met (a shard failed) is cancelled at once, and
# finished jobs stay listed for an hour so that their state can be read.
DependencyParameters=kill_invalid_depend
MinJobAge=3600
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=local NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -c -i
  slurmd -N local
  # Ready when the node takes jobs.
  for _ in $(seq 60); do
    if sinfo -h -N -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "$SLURM_CONF"
      exit 0
    fi
    sleep 0.5
  done
  echo "slurm-local: the node did not come up in 30 s; logs in $dir" >&2
  tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
  exit 1
  ;;
stop)
  if [ -e "$dir/slurm.conf" ] && alive "$dir/slurmctld.pid" slurmctld; then
    export SLURM_CONF="$dir/slurm.conf"
    # Jobs first: their processes would go on writing after the daemons stop.
    scancel --full --partition=local >/dev/null 2>&1 || true
    for _ in $(seq 40); do
      [ -z "$(squeue -h 2>/dev/null)" ] && break
      sleep 0.25
    done
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  # Wait for the daemons to go (the folder may be removed next); kill those that linger.
  for _ in $(seq 40); do
    alive "$dir/slurmd.pid" slurmd || alive "$dir/slurmctld.pid" slurmctld || break
    sleep 0.25
  done
  for daemon in slurmd slurmctld; do
    if alive "$dir/$daemon.pid" "$daemon"; then kill -9 "$(cat "$dir/$daemon.pid")" || true; fi
  done
  if alive "$dir/munged.pid" munged; then
    munged --stop --socket="$dir/munge.sock" >/dev/null 2>&1 || true
  fi
  exit 0
  ;;
*) usage ;;
esac
