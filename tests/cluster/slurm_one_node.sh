#!/usr/bin/env bash
# The cluster test: a one-node SLURM cluster on this machine, and a tiny medflow workflow run through
# `snakemake --profile profiles/slurm` on it, with every job going through sbatch.
#
#   bash tests/cluster/slurm_one_node.sh          (make cluster-test)
#
# What it does, all under one temporary folder (/tmp/medflow-slurm-PID) that it removes at the end:
#   - installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing;
#   - writes its own munge key, slurm.conf and gres.conf (two fake GPUs: character devices made with
#     mknod in the temporary folder, never under /dev, where medflow looks for real ones);
#   - starts munged, slurmctld and slurmd by hand (no systemd), records their PIDs, waits for the node;
#   - runs tests/cluster/tiny.yaml (one small study, to its HTML reports) through the slurm profile;
#   - checks that every non-local job went through sbatch, that the training job got a GPU from
#     SLURM (and fell back to the CPU, as the fake GPU is no GPU), and that the reports hold AUCs;
#   - stops everything it started, by PID, on exit (also on failure or Ctrl-C).
# CLUSTER_TEST_KEEP_LOGS=DIR keeps the logs (daemons, snakemake, rules) in DIR.
# Exits 0 with "SKIP" where it cannot run: not root (slurmd launches jobs and mknod needs root), or
# SLURM/munge are missing and apt-get is not there to install them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${MEDFLOW_PYTHON:-$REPO/.venv/bin/python}
RUN_TIMEOUT=${CLUSTER_TEST_TIMEOUT:-900}  # seconds for the workflow run; a hang fails instead of blocking CI
START=$SECONDS

skip() {
    echo "SKIP cluster test: $*"
    exit 0
}
log() { echo "[cluster-test $((SECONDS - START))s] $*"; }
fail() {
    echo "FAIL cluster test: $*" >&2
    exit 1
}

# --- prerequisites -------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || skip "needs root (slurmd runs the jobs, mknod makes the fake GPUs)"
case $PYTHON in */*) ;; *) PYTHON=$(command -v "$PYTHON" || echo "$PYTHON") ;; esac
case $PYTHON in /*) ;; *) PYTHON=$PWD/$PYTHON ;; esac  # the workflow runs from another folder
[ -x "$PYTHON" ] || fail "no Python at $PYTHON (run make install, or set MEDFLOW_PYTHON=)"
"$PYTHON" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
    || fail "snakemake-executor-plugin-slurm is not installed in $PYTHON's environment"

missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge mungekey:munge; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "SLURM/munge missing (${missing[*]}) and no apt-get to install them"
    log "installing ${missing[*]} (apt-get)"
    # shellcheck disable=SC2046
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${missing[@]}" | sort -u)) >/dev/null \
        || skip "could not install ${missing[*]} with apt-get"
fi

# --- the cluster ---------------------------------------------------------------------------------

T=$(mktemp -d "/tmp/medflow-slurm-$$.XXXX")
chmod 0711 "$T"  # munged wants its socket's folders searchable by all
# Every process started from here on (daemons, jobs, snakemake) carries this marker, so that the
# cleanup finds exactly ours, also job processes that outlive a killed slurmd.
export MEDFLOW_SLURM_TEST_DIR=$T
PIDS=()     # munged, slurmctld, slurmd
SMK_PID=""  # the workflow run (timeout + snakemake)

cleanup() {
    local rc=$? pid i
    set +e
    trap - EXIT INT TERM
    # snakemake first, while slurmctld still answers: on TERM it cancels what it submitted
    if [ -n "$SMK_PID" ] && kill -0 "$SMK_PID" 2>/dev/null; then
        kill -TERM "$SMK_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SMK_PID" 2>/dev/null || break; sleep 0.2; done
    fi
    if [ -n "${SLURM_CONF:-}" ] && [ -f "${SLURM_CONF:-/nonexistent}" ]; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel --full >/dev/null 2>&1
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do  # slurmd, slurmctld, then munged
        kill -TERM "${PIDS[i]}" 2>/dev/null
    done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    # leftovers of ours: slurmstepd and job processes carry the marker in their environment
    for pid in $(grep -lsz "^MEDFLOW_SLURM_TEST_DIR=$T\$" /proc/[0-9]*/environ | cut -d/ -f3); do
        [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] || kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    if [ $rc -ne 0 ] && [ -d "$T/log" ]; then
        echo "--- logs of the failed run (tail) ---" >&2
        for f in "$T"/log/*.log "$T"/work/logs/slurm/*/*/*.log "$T"/snakemake.log; do
            [ -f "$f" ] && { echo "== $f" >&2; tail -n 40 "$f" >&2; }
        done
    fi
    if [ -n "${CLUSTER_TEST_KEEP_LOGS:-}" ]; then  # keep the daemons' and snakemake's logs there
        mkdir -p "$CLUSTER_TEST_KEEP_LOGS" && cp -r "$T/log" "$T/snakemake.log" "$CLUSTER_TEST_KEEP_LOGS/" 2>/dev/null
        [ -d "$T/work/logs" ] && cp -r "$T/work/logs" "$CLUSTER_TEST_KEEP_LOGS/workflow-logs"
    fi
    rm -rf "$T"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$T"/{bin,etc,munge,state,spool,log,dev,work}
chmod 0711 "$T/munge"
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemAvailable:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
# The slurm profile asks 16 GB for training, like a real cluster would; with config_overrides the node
# may declare more than this machine has (memory is not consumable under CR_Core, nor enforced without
# cgroups, and the tiny jobs need a few hundred MB).
NODE_MEM=$((MEM_MB > 40000 ? MEM_MB : 40000))
PORT=$((20000 + $$ % 20000))  # slurmctld; slurmd uses PORT+1 (no clash with a system SLURM on 6817/6818)

# two fake GPUs (NVIDIA's major number 195), only for SLURM's gres bookkeeping
# (SLURM sets CUDA_VISIBLE_DEVICES only for gres backed by a character/block device; where mknod is
# refused, e.g. some containers, plain files still let jobs ask for GPUs, but none is handed over)
FAKE_GPUS=char
for k in 0 1; do
    mknod -m 0666 "$T/dev/nvidia$k" c 195 "$k" 2>/dev/null || { touch "$T/dev/nvidia$k" && FAKE_GPUS=file; }
done
[ $FAKE_GPUS = char ] || log "mknod refused here: the fake GPUs are plain files (no CUDA_VISIBLE_DEVICES)"

mungekey --create --keyfile="$T/munge/munge.key" >/dev/null 2>&1 \
    || dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$T/munge/munge.key"

cat >"$T/etc/slurm.conf" <<EOF
ClusterName=medflowtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
PlugStackConfig=$T/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
GresTypes=gpu
# the plugin's squeue status check needs finished jobs to stay visible: >= 3x its first status delay
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$NODE_MEM Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
echo "NodeName=$HOST Name=gpu File=$T/dev/nvidia[0-1]" >"$T/etc/gres.conf"
: >"$T/etc/plugstack.conf"
export SLURM_CONF=$T/etc/slurm.conf
# Inside a job the plugin's jobstep starts the rule with `srun`, after dropping every SLURM_* variable
# from its environment, SLURM_CONF included; without /etc/slurm/slurm.conf that srun finds no
# configuration ("Could not establish a configuration source"). A wrapper first on PATH (which sbatch
# --export=ALL hands to the job) puts it back; clusters with /etc/slurm/slurm.conf need none.
cat >"$T/bin/srun" <<EOF
#!/bin/sh
SLURM_CONF='$SLURM_CONF' exec $(command -v srun) "\$@"
EOF
chmod 0755 "$T/bin/srun"

log "starting munged, slurmctld, slurmd (config in $T/etc)"
setsid munged --foreground --key-file="$T/munge/munge.key" --socket="$T/munge/munge.sock" \
    --pid-file="$T/munge/munged.pid" --log-file="$T/log/munged.log" --seed-file="$T/munge/seed" \
    >>"$T/log/munged.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$T/munge/munge.sock" ] && break; sleep 0.1; done
[ -S "$T/munge/munge.sock" ] || fail "munged did not start"
# setsid: a Ctrl-C (SIGINT to the terminal's process group) must reach the script, whose cleanup
# stops snakemake and then the daemons, not kill the daemons under a running snakemake
setsid slurmctld -D -i -f "$SLURM_CONF" >>"$T/log/slurmctld.out" 2>&1 &
PIDS+=($!)
setsid slurmd -D -f "$SLURM_CONF" -N "$HOST" >>"$T/log/slurmd.out" 2>&1 &
PIDS+=($!)

state=""
for _ in $(seq 120); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && break
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || fail "a daemon exited (PID $pid)"; done
    sleep 0.5
done
[ "$state" = idle ] || fail "the node is not idle after 60 s (state: ${state:-none})"
log "node $HOST idle: $CPUS CPUs, 2 fake GPUs, partitions $(sinfo -h -o %P | tr '\n' ' ')"

# --- the workflow --------------------------------------------------------------------------------

W=$T/work
for item in Snakefile workflow profiles envs; do cp -r "$REPO/$item" "$W/"; done
mkdir -p "$W/config"
cp "$REPO/tests/cluster/tiny.yaml" "$W/config/config.yaml"

log "running the tiny workflow through --profile profiles/slurm"
export MEDFLOW_GPU_LOCK_DIR=$T/gpu-locks  # medflow's per-device locks, instead of /tmp/medflow-gpu-locks-UID
# --max-threads: rules that ask for more cores than this node has would be refused by sbatch.
# First status check 2 s after a submission instead of 40 (then +10 s per check that finds none
# finished; MinJobAge=300 is far above 3x that).
# In the background, with `wait`: a signal to this script then runs its cleanup at once.
(cd "$W" && PATH="$T/bin:$PATH" exec timeout "$RUN_TIMEOUT" "$PYTHON" -m snakemake --profile profiles/slurm \
    --max-threads "$CPUS" --slurm-init-seconds-before-status-checks 2 >"$T/snakemake.log" 2>&1) &
SMK_PID=$!
smk_rc=0
wait "$SMK_PID" || smk_rc=$?
SMK_PID=""
[ $smk_rc = 0 ] || fail "the workflow failed (exit $smk_rc; 124: ran past ${RUN_TIMEOUT}s); see the snakemake log above"
log "workflow done"

# --- checks --------------------------------------------------------------------------------------

SMK=$T/snakemake.log
steps=$(grep -oE '^[0-9]+ of [0-9]+ steps \(100%\) done' "$SMK" | tail -n 1 | cut -d' ' -f1)
[ -n "$steps" ] || fail "snakemake did not report all steps done"
remote=$(grep -cE '^rule [A-Za-z0-9_]+:' "$SMK" || true)
local_jobs=$(grep -cE '^localrule [A-Za-z0-9_]+:' "$SMK" || true)
submitted=$(grep -cE 'has been submitted with SLURM jobid' "$SMK" || true)
allocated=$(grep -cE 'sched: Allocate JobId=' "$T/log/slurmctld.log" || true)
done_ok=$(grep -cE '_job_complete: JobId=[0-9]+ done' "$T/log/slurmctld.log" || true)
echo "SLURM: $allocated of $remote jobs went through sbatch ($steps steps in all, $local_jobs local rules)"
[ "$remote" -gt 0 ] || fail "snakemake ran no job through SLURM"
[ "$submitted" -ge "$remote" ] || fail "snakemake submitted $submitted jobs for $remote non-local jobs"
[ "$allocated" -ge "$remote" ] || fail "slurmctld allocated $allocated jobs for $remote non-local jobs"
[ "$done_ok" -ge "$remote" ] || fail "slurmctld saw $done_ok jobs finish for $remote non-local jobs"
[ $((remote + local_jobs)) -eq "$steps" ] || fail "$remote remote + $local_jobs local jobs != $steps steps"

# the GPU path: the training job asked for a GPU (gpu_requests=always from the profile), ran in the
# gpu partition, SLURM handed it a fake device via CUDA_VISIBLE_DEVICES, and medflow fell back to the CPU
grep -qE 'sched: Allocate JobId=[0-9]+ NodeList=[^ ]+ #CPUs=[0-9]+ Partition=gpu' "$T/log/slurmctld.log" \
    || fail "no job ran in the gpu partition"
TRAIN_LOG=$W/logs/lnmc/train_ct_patch-convnet.log
if [ $FAKE_GPUS = char ]; then
    grep -q "CUDA cannot use them; training on the CPU" "$TRAIN_LOG" \
        || fail "the training job did not get a (fake) GPU from SLURM: $(grep -i 'gpu' "$TRAIN_LOG" | head -n 3)"
    echo "GPU: $(grep -o 'leased GPU(s) [^ ]* but CUDA cannot use them; training on the CPU' "$TRAIN_LOG" | head -n 1)"
else
    grep -q "GPU(s) requested but none visible.*training on the CPU" "$TRAIN_LOG" \
        || fail "the training job did not fall back to the CPU: $(grep -i 'gpu' "$TRAIN_LOG" | head -n 3)"
    echo "GPU: requested from SLURM (gpu partition), no device handed over (plain-file fake GPUs); trained on the CPU"
fi

# the reports: every model's page and the overview, with AUROC values in the overview's table
"$PYTHON" - "$W/results/lnmc" <<'EOF' || fail "the reports are missing or hold no AUROC"
import re, sys
from pathlib import Path
d = Path(sys.argv[1])
for name in ("ct_patch-convnet_report.html", "logreg_report.html"):
    text = (d / name).read_text()
    assert "AUC" in text and len(text) > 10_000, name
text = re.sub(r"<[^>]+>", " ", (d / "report.html").read_text())
text = re.sub(r"\s+", " ", text)
assert "test AUROC" in text, "no AUROC column"
for model in ("ct_patch-convnet", "logreg"):
    m = re.search(re.escape(model) + r" stage[12] malignant (\d\.\d{3}) ", text)
    assert m, f"no test AUROC for {model}"
    print(f"REPORT: {model} test AUROC {m.group(1)}")
EOF

log "passed"
