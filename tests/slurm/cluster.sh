#!/usr/bin/env bash
# A real two-node Slurm cluster on this machine, on loopback only, for tests:
# munged, slurmctld and two slurmd (n1, n2; Debian's build runs several
# slurmd on one host), with every key, conf, pid file, log, socket and state
# file under DIR. Needs root (Slurm and munged run as root here).
#
#   bash tests/slurm/cluster.sh up DIR     # prints SLURM_CONF=DIR/slurm.conf
#                                          #    and SLURM_NODES=n1,n2
#   bash tests/slurm/cluster.sh down DIR
#
# `up` installs slurm-wlm and munge with apt when they are missing (log in
# DIR/apt.log); when it cannot, or is not root, it prints `SKIP: <reason>`
# and exits 3. It
# waits (at most 30 s) for both nodes to answer, else prints the logs' tails
# on stderr, stops everything and exits 1. On a DIR whose cluster is up it
# only prints the two lines; one whose slurmd died (or was killed) gets that
# slurmd started again, jobs kept. Timeouts are short: a node whose slurmd
# dies is marked down within ~10-20 s and its batch jobs are requeued, to
# start again once their credential expired (10 s); a slurmd that comes back
# returns to service; job records stay 60 s after the job ended.
# `down` cancels the cluster's jobs, stops its daemons (and their slurmstepd)
# and exits 0 even when nothing ran.
set -euo pipefail

usage() { echo "usage: bash $0 up|down DIR" >&2; exit 2; }
[[ $# -eq 2 && ($1 == up || $1 == down) ]] || usage
cmd=$1
[[ $cmd == down && ! -d $2 ]] && exit 0
mkdir -p "$2"
dir=$(cd "$2" && pwd)
conf=$dir/slurm.conf
daemons=(munged slurmctld slurmd.n1 slurmd.n2)
export SLURM_CONF=$conf PATH=$PATH:/usr/sbin:/sbin

# One `up`/`down` at a time per DIR.
exec 8>"$dir/.lock"
flock 8

# Whether process $1 runs (exists and is no zombie).
runs() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }; [[ ${st:0:1} != Z ]]
}

# The pid of a daemon we started, when it still runs.
alive() {
  local pid
  pid=$(cat "$dir/run/$1.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && runs "$pid" && echo "$pid"
}

# Pids of the processes under pid $1.
descendants() {
  local c
  for c in $(pgrep -P "$1" || true); do echo "$c"; descendants "$c"; done
}

# Pids of the slurmstepd of DIR's slurmd (each holds its slurmd's log open).
stepds() {
  local p f
  for p in $(pgrep -x slurmstepd || true); do
    for f in /proc/"$p"/fd/*; do
      [[ $(readlink "$f" 2>/dev/null) == "$dir"/* ]] && { echo "$p"; break; }
    done
  done
  return 0
}

down() {
  if alive slurmctld >/dev/null && command -v scancel >/dev/null; then
    timeout 5 scancel --user="$(id -un)" >/dev/null 2>&1 || true
  fi
  local pids p i steps
  steps=$(stepds)
  pids=$( { for d in "${daemons[@]}"; do alive "$d" || true; done
            for p in $steps; do echo "$p"; descendants "$p"; done; } | sort -u)
  [[ -n $pids ]] || return 0
  kill -TERM $pids 2>/dev/null || true
  [[ -z $steps ]] || kill -KILL $steps 2>/dev/null || true   # they ignore SIGTERM
  for ((i = 0; i < 50; i++)); do   # 10 s, then SIGKILL
    for p in $pids; do runs "$p" && break; p=; done
    [[ -z ${p:-} ]] && return 0
    sleep 0.2
  done
  kill -KILL $pids 2>/dev/null || true
  sleep 0.2
}

report() { printf 'SLURM_CONF=%s\nSLURM_NODES=n1,n2\n' "$conf"; }

# Both nodes up and answering (idle, or running jobs), as slurmctld sees them.
ready() {
  local s
  s=$(timeout 3 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | tr '\n' ' ') || return 1
  [[ $s =~ ^n1\ (idle|mixed|allocated|completing)\ n2\ (idle|mixed|allocated|completing)\ $ ]]
}

# Waits (30 s at most) until ready and reports; else shows why, stops, exits 1.
wait_ready() {
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if ready; then report; exit 0; fi
    sleep 0.2
  done
  {
    echo "Slurm test cluster in $dir did not come up in 30 s:"
    timeout 5 sinfo -N 2>&1 || true
    for f in "$dir"/log/*; do echo "== $f"; tail -n 20 "$f"; done
  } >&2
  down
  exit 1
}

# Three free TCP ports in a row (slurmctld, n1's and n2's slurmd).
free_ports() {
  local used=" " line hex base i
  while read -r _ line _; do
    hex=${line##*:}; used+="$((16#$hex)) "
  done < <(tail -qn +2 /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  for ((i = 0; i < 200; i++)); do
    base=$((20000 + RANDOM % 40000))
    [[ $used == *" $base "* || $used == *" $((base + 1)) "* || $used == *" $((base + 2)) "* ]] && continue
    echo "$base"; return 0
  done
  return 1
}

install_slurm() {
  local m= c
  for c in slurmctld slurmd munged sinfo sbatch scancel; do
    command -v "$c" >/dev/null || { m=$c; break; }
  done
  [[ -z $m ]] && return 0
  command -v apt-get >/dev/null || { echo "SKIP: $m is missing and there is no apt-get"; exit 3; }
  # One install at a time across DIRs: lock this script file (writes nothing).
  exec 7<"$0"
  flock 7
  command -v "$m" >/dev/null && return 0
  { DEBIAN_FRONTEND=noninteractive apt-get -q update &&
    DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends slurm-wlm munge; } \
    >"$dir/apt.log" 2>&1 ||
    { echo "SKIP: apt-get install slurm-wlm munge failed (see $dir/apt.log)"; exit 3; }
  command -v "$m" >/dev/null || { echo "SKIP: $m still missing after apt-get install"; exit 3; }
}

# Starts a daemon in its own session, detached from our stdout/stderr and
# locks (a lock it inherited would be held forever), recording its pid.
start() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1 7<&- 8>&- &
  echo $! >"$dir/run/$name.pid"
  disown
}

if [[ $cmd == down ]]; then down; exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "SKIP: the test Slurm cluster runs as root"; exit 3; }

running=1
for d in "${daemons[@]}"; do alive "$d" >/dev/null || running=0; done
if ((running)) && ready; then report; exit 0; fi
# Only a slurmd is gone: start it again, keeping the jobs.
if [[ -f $conf ]] && alive munged >/dev/null && alive slurmctld >/dev/null; then
  for n in n1 n2; do alive "slurmd.$n" >/dev/null || start "slurmd.$n" slurmd -D -N "$n" -f "$conf"; done
  wait_ready
fi
down   # whatever is left of an earlier cluster in DIR

install_slurm
rm -rf "$dir/munge" "$dir/state" "$dir/spool" "$dir/run" "$dir/log"
mkdir -p "$dir/munge" "$dir/state" "$dir/spool/n1" "$dir/spool/n2" "$dir/run" "$dir/log"
chmod 700 "$dir/munge"
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
chmod 400 "$dir/munge/munge.key"

port=$(free_ports) || { echo "no free ports found" >&2; exit 1; }
cat >"$conf" <<EOF
# Written by tests/slurm/cluster.sh: a test cluster on loopback.
ClusterName=bptest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.own.pid
SlurmdPidFile=$dir/run/slurmd.%n.own.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.%n.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Start jobs at once when others end or a dependency is met (not 3 s later).
SchedulerParameters=batch_sched_delay=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Nodes count as configured even on a smaller machine (no "Low RealMemory").
SlurmdParameters=config_overrides
# Short timeouts: a dead slurmd is noticed fast, its jobs requeued (JobRequeue),
# and a slurmd that comes back is put back in service.
SlurmdTimeout=10
SlurmctldTimeout=10
MessageTimeout=5
TCPTimeout=2
KillWait=5
InactiveLimit=0
MinJobAge=60
ReturnToService=2
JobRequeue=1
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((port + 1)) CPUs=2 RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((port + 2)) CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=all Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF

# --force: all runs as root, so munged need not insist that every directory
# above its socket is open to all (a test's temporary DIR is often 0700).
start munged munged --foreground --key-file "$dir/munge/munge.key" \
  --socket "$dir/munge/munge.socket" --pid-file "$dir/run/munged.own.pid" \
  --log-file "$dir/log/munged.log" --seed-file "$dir/munge/munge.seed" \
  --num-threads=10 --force
for ((i = 0; i < 50; i++)); do [[ -S $dir/munge/munge.socket ]] && break; sleep 0.1; done
start slurmctld slurmctld -D -f "$conf"
start slurmd.n1 slurmd -D -N n1 -f "$conf"
start slurmd.n2 slurmd -D -N n2 -f "$conf"
wait_ready
