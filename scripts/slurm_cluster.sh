#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (Debian's slurm-wlm and munge), for the tests and for trying
# `snakemake --profile profiles/slurm` without a cluster. Everything lives in one folder, nothing in /etc:
#
#   scripts/slurm_cluster.sh up      # start munged, slurmctld and slurmd; prints the two exports below
#   eval "$(scripts/slurm_cluster.sh env)"   # export SLURM_CONF=<folder>/etc/slurm.conf PATH=<folder>/bin:$PATH
#   sinfo; snakemake --profile profiles/slurm --configfile config/test.yaml
#   scripts/slurm_cluster.sh down    # stop the daemons (by their pid files) and delete the folder
#
# `up` and `down` are idempotent: `up` on a running cluster only prints its environment, `down` on none
# does nothing. When a daemon cannot start, `up` stops what it started, prints that daemon's log and fails.
#
# The node is this host, with two partitions over it: `cpu` (the default) and `gpu`, as in
# profiles/slurm/partitions.yaml. It declares fake GPUs (gres/gpu backed by device nodes that behave as
# /dev/null, no driver): SLURM schedules and counts them and sets CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS in
# a job, but torch sees no GPU. Its CPUs and memory are taken from the config, not the hardware
# (SlurmdParameters=config_overrides), so a 2-core machine can hold the profile's requests; no cgroups
# enforce them. No accounting: `sacct` does not work; the executor plugin polls with
# `--slurm-status-command squeue`; finished jobs stay in `scontrol show job` for an hour (MinJobAge).
# The config is not in /etc/slurm, so the commands find it through SLURM_CONF; the executor's job step drops
# every SLURM_* variable before it calls srun, so <folder>/bin holds an srun that sets SLURM_CONF again (a
# real cluster's srun reads /etc/slurm).
#
# Settings (environment): OBJGUIDED_SLURM_DIR (the folder; default ${TMPDIR:-/tmp}/objguided-slurm-<uid>;
# a folder this script did not make is never deleted), OBJGUIDED_SLURM_CPUS (8), OBJGUIDED_SLURM_MEM_MB
# (64000), OBJGUIDED_SLURM_GPUS (2). Needs root (slurmd starts jobs as their user).
set -euo pipefail

dir=${OBJGUIDED_SLURM_DIR:-${TMPDIR:-/tmp}/objguided-slurm-$(id -u)}
cpus=${OBJGUIDED_SLURM_CPUS:-8}
mem_mb=${OBJGUIDED_SLURM_MEM_MB:-64000}
gpus=${OBJGUIDED_SLURM_GPUS:-2}
conf=$dir/etc/slurm.conf
daemons=(slurmd slurmctld munged)   # the order `down` stops them in

say() { echo "slurm_cluster: $*" >&2; }

pid_of() {  # the pid in $1's pid file, when that process still runs
  local file=$dir/run/$1.pid pid
  [ -f "$file" ] || return 1
  pid=$(tr -dc 0-9 < "$file")
  # alive, and still that daemon (not another process that got the pid later)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$1" \
    && echo "$pid"
}

stop() {  # $1: daemon; TERM, then KILL after 10 s
  local pid i
  pid=$(pid_of "$1") || { rm -f "$dir/run/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$1 ($pid) ignored TERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/run/$1.pid"
}

marker=.objguided-slurm-cluster

remove_folder() {  # only a folder this script made (it holds the marker), or an empty one
  if [ -e "$dir" ] && [ ! -e "$dir/$marker" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    say "$dir exists and was not made by this script: not touching it (set OBJGUIDED_SLURM_DIR elsewhere)"
    exit 1
  fi
  rm -rf "$dir"
}

down() {
  local d i
  if pid_of slurmctld >/dev/null; then   # cancel what still runs, so that no job outlives its cluster
    SLURM_CONF=$conf scancel --user "$(id -un)" 2>/dev/null || true
    for i in $(seq 50); do
      [ -z "$(SLURM_CONF=$conf squeue -h -t RUNNING,COMPLETING 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  for d in "${daemons[@]}"; do stop "$d"; done
  remove_folder
}

fail() {  # $1: the daemon that did not come up; show its log, stop the others
  say "$1 did not start; its log ($dir/log/$1.log):"
  tail -n 40 "$dir/log/$1.log" >&2 2>/dev/null || say "(no log written)"
  local d
  for d in "${daemons[@]}"; do stop "$d"; done
  exit 1
}

free_port() {  # the first port from $1 on that nothing listens on
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

print_env() { echo "export SLURM_CONF=$conf PATH=$dir/bin:\$PATH"; }

running() { pid_of munged >/dev/null && pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null; }

write_config() {
  local host user ctld_port slurmd_port i
  host=$(hostname -s)
  user=$(id -un)
  ctld_port=$(free_port $((16817 + $(id -u) % 1000 * 4)))
  slurmd_port=$(free_port $((ctld_port + 1)))
  mkdir -p "$dir"/{etc,run,log,state,spool,munge,dev,bin}
  : > "$dir/$marker"
  printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$conf" "$(command -v srun)" > "$dir/bin/srun"
  chmod +x "$dir/bin/srun"
  chmod 700 "$dir/munge"
  # character devices (major/minor of /dev/null): gres/gpu refuses plain files
  for i in $(seq 0 $((gpus - 1))); do mknod "$dir/dev/gpu$i" c 1 3; done
  cat > "$conf" <<EOF
# written by scripts/slurm_cluster.sh: a one-node test cluster
ClusterName=objguided
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
DefMemPerCPU=1000
MinJobAge=3600
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$gpus State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
  cat > "$dir/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$host Name=gpu File=$dir/dev/gpu[0-$((gpus - 1))]
EOF
}

up() {
  if running; then print_env; return 0; fi
  local d
  [ "$(id -u)" = 0 ] || { say "needs root: slurmd starts jobs as any user, the fake GPUs are device nodes"; exit 1; }
  for d in "${daemons[@]}"; do stop "$d"; done   # a half-started cluster: start again from scratch
  remove_folder
  for d in munged slurmctld slurmd sinfo srun; do
    command -v "$d" >/dev/null || { say "$d not found: apt-get install -y slurm-wlm munge"; exit 1; }
  done
  write_config
  head -c 1024 /dev/urandom > "$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  export SLURM_CONF=$conf
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" \
    >>"$dir/log/munged.log" 2>&1 || fail munged
  slurmctld -f "$conf" -i >>"$dir/log/slurmctld.log" 2>&1 || fail slurmctld
  slurmd -f "$conf" -N "$(hostname -s)" >>"$dir/log/slurmd.log" 2>&1 || fail slurmd
  local i state=""
  for i in $(seq 150); do   # 30 s for the node to register
    for d in munged slurmctld slurmd; do
      if [ "$i" -gt 10 ] && ! pid_of "$d" >/dev/null; then fail "$d"; fi
    done
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && break
    sleep 0.2
  done
  if [ "$state" != idle ]; then
    say "the node is '${state:-not registered}' after 30 s, not idle"
    sinfo -N -l >&2 2>/dev/null || true
    fail slurmd
  fi
  say "up: $(sinfo -h -o '%P %D %c CPUs %m MB %G %T' | tr '\n' ';') (folder $dir)"
  print_env
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  status) if running; then SLURM_CONF=$conf sinfo -N -l; else say "not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac
