#!/usr/bin/env bash
# A real single-node Slurm on this machine, for CI and for trying the slurm launcher:
# munge, MariaDB (own data directory, 127.0.0.1 only), slurmdbd, slurmctld, slurmd. No systemd.
#
#   slurm/local-cluster.sh start|stop|status
#
# Everything lives under $FLOWBENCH_SLURM_DIR (default: a folder in the temp directory). `start`
# installs Debian's packages when they are missing (as root), records every PID it starts in
# $FLOWBENCH_SLURM_DIR/pids, and writes slurm.conf there; commands find it through SLURM_CONF
# (`eval "$(slurm/local-cluster.sh env)"`), or through /etc/slurm/slurm.conf, which `start` links
# to it when that file does not exist. `stop` cancels the jobs, then stops only the recorded PIDs.
set -euo pipefail

DIR=${FLOWBENCH_SLURM_DIR:-${TMPDIR:-/tmp}/flowbench-slurm}
DB_PORT=${FLOWBENCH_SLURM_DB_PORT:-3307}
CTLD_PORT=${FLOWBENCH_SLURM_PORT:-6817}  # slurmd uses +1, slurmdbd +2
PIDS=$DIR/pids
CONF=$DIR/etc/slurm.conf
ETC_LINK=/etc/slurm/slurm.conf
export SLURM_CONF=$CONF
PACKAGES="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"

log() { echo "local-cluster: $*" >&2; }

install_packages() {
  local missing=0
  for bin in slurmctld slurmd slurmdbd munged mariadbd sinfo sacct; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || missing=1
  done
  [ "$missing" = 0 ] && return
  [ "$(id -u)" = 0 ] || { log "packages missing ($PACKAGES) and not root to install them"; exit 1; }
  log "installing $PACKAGES"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# start NAME COMMAND...: run in its own session, record "NAME PID"
launch() {
  local name=$1; shift
  setsid "$@" >>"$DIR/log/$name.out" 2>&1 </dev/null &
  echo "$name $!" >>"$PIDS"
}

recorded_pid() { awk -v n="$1" '$1 == n {p = $2} END {print p}' "$PIDS" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  while [ "$SECONDS" -lt "$deadline" ]; do
    timeout 5 "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "$what did not come up in ${seconds}s (logs in $DIR/log)"; tail -n 5 "$DIR"/log/*.log "$DIR"/log/*.out >&2 || true
  return 1
}

write_configs() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat >"$CONF" <<EOF
ClusterName=flowbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CryptoType=crypto/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups here
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job that asks no memory would otherwise take the whole node
DefMemPerCPU=512
# array tasks otherwise start in waves seconds apart
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((CTLD_PORT + 2))
# with munge, the socket that authenticates to slurmdbd (AuthInfo does not reach that connection)
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
ReturnToService=2
KillWait=10
MinJobAge=3600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((CTLD_PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
}

start() {
  if [ -s "$PIDS" ] && alive "$(recorded_pid slurmd)"; then
    log "already running (state in $DIR)"; return 0
  fi
  install_packages
  mkdir -p "$DIR"/{etc,log,run,munge,mysql,state/ctld,state/d}
  : >"$PIDS"
  write_configs
  if [ ! -e "$ETC_LINK" ] && [ -w "$(dirname "$ETC_LINK")" ]; then ln -s "$CONF" "$ETC_LINK"; fi

  [ -s "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 2>/dev/null; chmod 400 "$DIR/munge/munge.key"; }
  launch munged /usr/sbin/munged --foreground --force --key-file="$DIR/munge/munge.key" \
    --socket="$DIR/munge/munge.socket" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"

  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --datadir="$DIR/mysql" --user=root --auth-root-authentication-method=normal \
      --skip-test-db >"$DIR/log/mariadb-install.out" 2>&1
  fi
  launch mariadbd /usr/sbin/mariadbd --no-defaults --datadir="$DIR/mysql" --user=root \
    --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$DIR/run/mysql.sock" \
    --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=32M
  wait_for 30 MariaDB mariadb --no-defaults -h 127.0.0.1 -P "$DB_PORT" -u root -e "select 1"

  launch slurmdbd /usr/sbin/slurmdbd -D  # reads slurmdbd.conf beside $SLURM_CONF
  wait_for 30 slurmdbd sacctmgr -i list cluster
  sacctmgr -i add cluster flowbench >/dev/null 2>&1 || true
  launch slurmctld /usr/sbin/slurmctld -D -i -f "$CONF"
  launch slurmd /usr/sbin/slurmd -D -f "$CONF"
  wait_for 30 "node" bash -c '[ "$(sinfo -h -o %T | head -1)" = idle ]'
  wait_for 30 accounting sacct -n -X
  log "up: $(sinfo -h -o '%P %D %c cpus %T') (SLURM_CONF=$CONF)"
}

stop() {
  [ -s "$PIDS" ] || { log "not running (no $PIDS)"; return 0; }
  if alive "$(recorded_pid slurmctld)"; then  # job processes outlive slurmd: cancel them first
    timeout 10 scancel --user "$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(timeout 5 squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
  fi
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid=$(recorded_pid "$name")
    alive "$pid" || continue
    kill -TERM "$pid"
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && { log "$name ($pid) ignored SIGTERM; killing it"; kill -KILL "$pid"; }
  done
  : >"$PIDS"
  if [ -L "$ETC_LINK" ] && [ "$(readlink "$ETC_LINK")" = "$CONF" ]; then rm -f "$ETC_LINK"; fi
  log "stopped"
}

status() {
  local code=0
  [ -s "$PIDS" ] || { echo "not running"; return 3; }
  while read -r name pid; do
    if alive "$pid"; then echo "$name $pid running"; else echo "$name $pid dead"; code=3; fi
  done <"$PIDS"
  timeout 10 sinfo 2>&1 || code=3
  return $code
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
