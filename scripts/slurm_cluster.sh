#!/usr/bin/env bash
# Slurm for real: a single-node Slurm cluster on this machine, and `plastic search --executor
# slurm` run through it.
#
# 1. installs Debian's slurm-wlm and munge (once; an installed Slurm is reused);
# 2. starts munged, slurmctld and slurmd with a generated slurm.conf (the set-up recorded in
#    ../shared/reference/slurm.md: no accounting, so the driver learns from squeue, scontrol and
#    the result files) and waits for the node to be idle;
# 3. runs a 2-task job array (`sleep 1; echo ok`): the cluster itself works;
# 4. runs configs/searches/tiny.toml with `--executor slurm`: exits 0, results.csv has its 4
#    trials, each `ok` with a validation accuracy;
# 5. runs one trial that exceeds a 1-minute Slurm time limit: results.csv shows it `timeout`
#    (or `failed`) and the search still exits 0;
# 6. runs configs/sweeps/tiny.toml with `plastic sweep --executor slurm` (runs in named
#    directories, runs/NAME): exits 0, results.csv has its 24 runs, each `ok`, and it prints the
#    data set it gathered.
# It stops the daemons it started when it exits, however it exits. Where it cannot start a
# cluster (not root, no apt-get, a daemon that does not come up) it says why and exits 1: it never
# passes without having run the searches on Slurm.
#
# Usage: scripts/slurm_cluster.sh [--cluster-only]
#   --cluster-only   steps 1-3 only
# Environment:
#   PLASTIC            the plastic binary (default ${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}/release/plastic)
#   PLASTIC_SLURM_DIR  the cluster's slurm.conf, state and logs (default /tmp/plastic-slurm)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "slurm_cluster: $*"; }
fail() {
    echo "slurm_cluster: FAILED: $*" >&2
    exit 1
}

cluster_only=0
case "${1:-}" in
    "") ;;
    --cluster-only) cluster_only=1 ;;
    *) fail "unknown argument ${1} (usage: $0 [--cluster-only])" ;;
esac

started=$SECONDS
dir="${PLASTIC_SLURM_DIR:-/tmp/plastic-slurm}"
plastic="${PLASTIC:-${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}/release/plastic}"

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs packages and starts munged, slurmctld and slurmd)"

# ---- 1. install -------------------------------------------------------------------------------
need=()
for tool in sbatch squeue scontrol scancel sinfo slurmctld slurmd munged munge unmunge; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || fail "Slurm is not installed (missing: ${need[*]}) and there is no apt-get to install Debian's slurm-wlm and munge"
    say "installing slurm-wlm and munge (missing: ${need[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1; } \
        || fail "apt-get install slurm-wlm munge failed (rerun it by hand to see why)"
    for tool in "${need[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || fail "$tool is still missing after installing slurm-wlm and munge"
    done
fi

# ---- 2. start the cluster ---------------------------------------------------------------------
mkdir -p "$dir"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf" # every client (sbatch, squeue, …, and the search driver) reads this file

# The daemons this run started, stopped on exit by their process ids.
pids=()
stop_daemons() {
    local pid i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    pids=()
    rm -f "$dir"/*.daemon
}
trap stop_daemons EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Daemons from an earlier run of this script that was itself killed (it records their pids):
# stop them, so this run starts from its own configuration.
for name in slurmd slurmctld munged; do
    file="$dir/$name.daemon"
    [ -e "$file" ] || continue
    pid=$(cat "$file")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
        say "stopping $name (pid $pid) left by an earlier run"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$file"
done
for name in slurmctld slurmd; do
    if pgrep -x "$name" >/dev/null; then
        fail "a $name that this script did not start is running (pid $(pgrep -x "$name" | tr '\n' ' ')): stop it first, this script starts its own single-node cluster"
    fi
done

# $1: a name for messages; $2: its log; the rest: the command, run in the foreground of a
# background job so that its pid is known.
start_daemon() {
    local name=$1 log=$2
    shift 2
    "$@" >>"$log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    echo "$pid" >"$dir/$name.daemon"
    sleep 0.5
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; fail "$name exited at once (log above, $log)"; }
}

# munge: Slurm's authentication. A munged that already answers is used as it is.
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged is already running"
else
    [ -s /etc/munge/munge.key ] || fail "/etc/munge/munge.key is missing (the munge package creates it; try: apt-get install --reinstall munge)"
    mkdir -p /run/munge
    chown munge:munge /run/munge 2>/dev/null || true
    start_daemon munged "$dir/munged.out" /usr/sbin/munged --force --foreground
    ok=0
    for _ in $(seq 50); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || { tail -n 20 "$dir/munged.out" >&2; fail "munged started but munge -n | unmunge does not succeed"; }
fi

host=$(hostname -s)
# The node as slurmd sees it (CPUs, sockets, cores, threads, memory); nproc and /proc/meminfo if
# that fails. Configuring more than slurmd finds would leave the node invalid.
node=$(slurmd -C 2>/dev/null | grep '^NodeName=' || true)
if [ -z "$node" ]; then
    node="NodeName=$host CPUs=$(nproc) RealMemory=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))"
fi
node="NodeName=$host ${node#NodeName=* }"

rm -rf "$dir/state" "$dir/spool" # every run starts with an empty queue and job ids from 1
mkdir -p "$dir/state" "$dir/spool"
cat >"$conf" <<EOF
# Written by scripts/slurm_cluster.sh: a single-node cluster, no accounting.
ClusterName=plastic
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Time limits: SIGTERM when the limit is reached (no grace), SIGKILL 5 s later.
KillWait=5
OverTimeLimit=0
# scontrol remembers a finished job for 10 minutes (how the driver learns why a task without a
# result ended).
MinJobAge=600
InactiveLimit=0
$node
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

start_daemon slurmctld "$dir/slurmctld.out" /usr/sbin/slurmctld -D -f "$conf"
ok=0
for _ in $(seq 100); do
    if scontrol ping 2>/dev/null | grep -q 'is UP'; then ok=1; break; fi
    sleep 0.2
done
[ $ok = 1 ] || { tail -n 20 "$dir/slurmctld.log" >&2; fail "slurmctld does not answer scontrol ping (log above, $dir/slurmctld.log)"; }

start_daemon slurmd "$dir/slurmd.out" /usr/sbin/slurmd -D -f "$conf"
state=""
for i in $(seq 120); do
    state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -n 1)
    [ "$state" = idle ] && break
    # A node that registered before its configuration was right comes back with a resume.
    if [ "$i" = 40 ] && [[ "$state" =~ ^(down|drain|drained|inval) ]]; then
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    fi
    sleep 0.5
done
[ "$state" = idle ] || { tail -n 20 "$dir/slurmd.log" >&2; fail "node $host is '${state:-unknown}', not idle, 60 s after slurmd started (log above, $dir/slurmd.log)"; }
say "cluster up after $((SECONDS - started)) s: $(sinfo -h -N -n "$host" -o '%N %T %c CPUs %m MB') ($(sbatch --version))"

# ---- 3. a 2-task job array --------------------------------------------------------------------
work=$(mktemp -d /tmp/plastic-slurm-check.XXXXXX)
cat >"$work/array.sh" <<EOF
#!/bin/bash
#SBATCH --job-name=plastic-check
#SBATCH --array=0-1
#SBATCH --output=$work/%A_%a.out
#SBATCH --time=00:01:00
sleep 1
echo ok
EOF
job=$(sbatch --parsable "$work/array.sh") || fail "sbatch of a 2-task job array failed"
job=${job%%;*}
for _ in $(seq 120); do
    [ -z "$(squeue -h -r -j "$job" -o %i 2>/dev/null)" ] && break
    sleep 0.5
done
for task in 0 1; do
    out="$work/${job}_$task.out"
    [ "$(cat "$out" 2>/dev/null)" = ok ] || {
        scontrol show job "${job}_$task" 2>&1 | head -n 20 >&2 || true
        fail "array task ${job}_$task did not print ok into $out"
    }
done
say "a 2-task job array ran (job $job)"
if [ $cluster_only = 1 ]; then
    rm -rf "$work"
    say "--cluster-only: done in $((SECONDS - started)) s"
    exit 0
fi

# ---- 4. the tiny search on Slurm --------------------------------------------------------------
[ -x "$plastic" ] || fail "no plastic binary at $plastic (build it with cargo build --release, or set PLASTIC)"
"$plastic" search --help 2>/dev/null | grep -q -- '--executor' || fail "$plastic has no 'search --executor' command"
search_config=configs/searches/tiny.toml
[ -f "$search_config" ] || fail "$search_config is missing"

# Prints the rows of a results.csv as "trial<TAB>status<TAB>validation accuracy", reading its
# header for the columns; fields may be quoted (RFC 4180, one line each).
results() {
    awk '
        function split_csv(line, out,    n, i, c, field, quoted) {
            n = 0; field = ""; quoted = 0
            for (i = 1; i <= length(line); i++) {
                c = substr(line, i, 1)
                if (quoted) {
                    if (c == "\"" && substr(line, i + 1, 1) == "\"") { field = field "\""; i++ }
                    else if (c == "\"") quoted = 0
                    else field = field c
                } else if (c == "\"") quoted = 1
                else if (c == ",") { out[++n] = field; field = "" }
                else field = field c
            }
            out[++n] = field
            return n
        }
        { sub(/\r$/, "") }
        NR == 1 {
            n = split_csv($0, head)
            for (i = 1; i <= n; i++) {
                if (head[i] == "trial") t = i
                if (head[i] == "status") s = i
                if (head[i] ~ /^val(idation)?_acc(uracy)?$/ || head[i] == "validation accuracy") v = i
            }
            if (!t || !s || !v) { print "results.csv has no trial, status or validation_accuracy column: " $0 > "/dev/stderr"; exit 1 }
            next
        }
        $0 != "" { split_csv($0, row); print row[t] "\t" row[s] "\t" row[v] }
    ' "$1"
}

out1="$work/search-tiny"
say "running $search_config on Slurm"
t0=$SECONDS
rc=0
"$plastic" search --config "$search_config" --executor slurm --out "$out1" >"$work/search-tiny.log" 2>&1 || rc=$?
[ $rc = 0 ] || { tail -n 30 "$work/search-tiny.log" >&2; fail "plastic search --executor slurm exited with $rc (log above, $work/search-tiny.log)"; }
csv=$(find "$out1" -name results.csv | head -n 1)
[ -n "$csv" ] || fail "the search wrote no results.csv under $out1"
rows=$(results "$csv") || fail "cannot read $csv"
echo "$rows" | sed 's/^/    /'
[ "$(echo "$rows" | grep -c .)" = 4 ] || fail "$csv has $(echo "$rows" | grep -c .) trial rows, expected 4"
bad=$(echo "$rows" | awk -F '\t' '$2 != "ok" || $3 == "" || $3 !~ /^[0-9.eE+-]+$/' || true)
[ -z "$bad" ] || fail "trials not ok or without a validation accuracy in $csv: $bad"
say "tiny search: 4 trials ok in $((SECONDS - t0)) s"

# ---- 5. a trial past its Slurm time limit -----------------------------------------------------
out2="$work/search-timeout"
say "running one trial past a 1-minute Slurm time limit (takes 1-2 minutes)"
t0=$SECONDS
rc=0
"$plastic" search --config "$search_config" --executor slurm --out "$out2" \
    --set slurm.time=00:01:00 --set trials=1 --set base.train.steps=100000 >"$work/search-timeout.log" 2>&1 || rc=$?
[ $rc = 0 ] || { tail -n 30 "$work/search-timeout.log" >&2; fail "the search with a timed-out trial exited with $rc (log above, $work/search-timeout.log): a trial must never kill a search"; }
csv=$(find "$out2" -name results.csv | head -n 1)
[ -n "$csv" ] || fail "the time-limit search wrote no results.csv under $out2"
rows=$(results "$csv") || fail "cannot read $csv"
echo "$rows" | sed 's/^/    /'
[ "$(echo "$rows" | grep -c .)" = 1 ] || fail "$csv has $(echo "$rows" | grep -c .) trial rows, expected 1"
status=$(echo "$rows" | cut -f 2)
[ "$status" = timeout ] || [ "$status" = failed ] || fail "the trial past its time limit has status '$status' in $csv, expected timeout"
say "time limit: the trial came out '$status' after $((SECONDS - t0)) s"

# ---- 6. the tiny sweep on Slurm ---------------------------------------------------------------
sweep_config=configs/sweeps/tiny.toml
[ -f "$sweep_config" ] || fail "$sweep_config is missing"
out3="$work/sweep-tiny"
say "running $sweep_config on Slurm"
t0=$SECONDS
rc=0
"$plastic" sweep --config "$sweep_config" --executor slurm --out "$out3" >"$work/sweep-tiny.out" 2>"$work/sweep-tiny.log" || rc=$?
[ $rc = 0 ] || { tail -n 30 "$work/sweep-tiny.log" >&2; fail "plastic sweep --executor slurm exited with $rc (log above, $work/sweep-tiny.log)"; }
csv="$out3/tiny/results.csv"
[ -f "$csv" ] || fail "the sweep wrote no $csv"
# The status column, found by its header; the cells before it (run names, axis values) hold no commas.
statuses=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status") s = i; next } $0 != "" { print $1 "\t" $s }' "$csv")
[ "$(echo "$statuses" | grep -c .)" = 24 ] || fail "$csv has $(echo "$statuses" | grep -c .) runs, expected 24"
bad=$(echo "$statuses" | awk -F '\t' '$2 != "ok"' || true)
[ -z "$bad" ] || fail "runs not ok in $csv: $bad"
dataset=$(cat "$work/sweep-tiny.out")
{ [ "$dataset" = "$out3/tiny/dataset.npz" ] && [ -s "$dataset" ]; } || fail "the sweep printed '$dataset', not its data set $out3/tiny/dataset.npz"
say "tiny sweep: 24 runs ok, $(tail -n 2 "$work/sweep-tiny.log" | grep -o '[0-9]* samples' || echo '? samples') in $dataset, in $((SECONDS - t0)) s"

rm -rf "$work"
say "passed in $((SECONDS - started)) s"
