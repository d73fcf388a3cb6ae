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

case "$action" in
start)
  [ "$(id -u)" -eq 0 ] || cannot "not root (slurmd must start jobs as their user)"
  for p in munged slurmctld slurmd sbatch scontrol; do
    command -v "$p" >/dev/null || cannot "$p not found (scripts/setup.sh installs it)"
  done
  ctld_port=${3:-16817}
  slurmd_port=${4:-16818}
  mkdir -p "$dir/state" "$dir/spool"
  chmod 755 "$dir"
  # MUNGE: a fresh key for this cluster only, its socket in the folder.
  if [ ! -e "$dir/munge.key" ]; then
    head -c 1024 /dev/urandom > "$dir/munge.key"
    chmod 400 "$dir/munge.key"
  fi
  munged --force --key-file="$dir/munge.key" --socket="$dir/munge.sock" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
  cpus=$(nproc)
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
  if [ -e "$dir/slurm.conf" ]; then
    SLURM_CONF="$dir/slurm.conf" scontrol shutdown >/dev/null 2>&1 || true
  fi
  # Wait for the daemons to go (the folder may be removed next); kill those that linger.
  pids=()
  for daemon in slurmd slurmctld; do
    f="$dir/$daemon.pid"
    [ -e "$f" ] && pids+=("$(cat "$f")")
  done
  for _ in $(seq 40); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -e "$dir/munge.sock" ] && munged --stop --socket="$dir/munge.sock" >/dev/null 2>&1 || true
  exit 0
  ;;
*) usage ;;
esac
