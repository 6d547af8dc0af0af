#!/usr/bin/env bash
# Submit launch/distill.sbatch (what `make distill LAUNCHER=slurm` runs):
#
#     launch/submit.sh [--nodes N] [--gpus G] [--tasks-per-node T] [--cpus-per-task C] [--partition P]
#                      [--time HH:MM:SS] [--sbatch=--flag=value ...] [--wait] -- OVERRIDE ...
#
# The overrides (experiment=..., key=value, ...) are checked here first (the same Hydra composition and
# schema check as the job's, so a typo fails now rather than after the queue), the run's output_dir is
# resolved from them, and the job's log goes to OUTPUT_DIR/slurm/<job name>-<job id>.out. The job
# ends with the run's report (distill.sbatch), in the directory passed as T2V_REPORT_DIR. Each
# override stays one argv entry all the way to the tasks. --gpus 0 asks for no GPUs (CPU tasks,
# gloo). --wait polls the job until it ends (requeues included) and exits 0 only if it COMPLETED.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${T2V_PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
[[ "$PY" = /* ]] || PY="$PWD/$PY"
NODES=1 GPUS=1 TASKS="" CPUS="" PARTITION="" TIME="" WAIT=0 POLL="${T2V_POLL_S:-5}"
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --gpus) GPUS="$2"; shift 2 ;;
        --tasks-per-node) TASKS="$2"; shift 2 ;;
        --cpus-per-task) CPUS="$2"; shift 2 ;;
        --partition) PARTITION="$2"; shift 2 ;;
        --time) TIME="$2"; shift 2 ;;
        --sbatch=*) EXTRA+=("${1#--sbatch=}"); shift ;;
        --wait) WAIT=1; shift ;;
        --) shift; break ;;
        *) echo "submit.sh: unknown option $1 (overrides go after --)" >&2; exit 2 ;;
    esac
done
TASKS="${TASKS:-$GPUS}"
if [[ -z "$TASKS" || "$TASKS" -lt 1 ]]; then
    echo "submit.sh: GPUS=0 (CPU tasks) needs TASKS_PER_NODE=N" >&2
    exit 2
fi
command -v sbatch >/dev/null || { echo "submit.sh: sbatch not found (run locally with LAUNCHER=local)" >&2; exit 2; }

# output_dir, experiment_name and report dir (the export's folder if train.export_dir is set, else output_dir)
# of this run, exactly as the job will compose them.
mapfile -t resolved < <(cd "$REPO" && "$PY" - "$@" <<'PYEOF'
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2vturbo.config import ConfigError, validate

try:
    with initialize_config_dir(config_dir=str(Path("conf").resolve()), version_base="1.3"):
        cfg = compose("config", overrides=sys.argv[1:])
    vcfg = validate(cfg)
    from t2vturbo.backbones import check_paths

    check_paths(vcfg)  # the teacher folder etc. (a cluster shares this file system with its nodes)
except FileNotFoundError as e:
    sys.exit(f"error: {e}")
except ConfigError as e:
    sys.exit(f"config error: {e}")
except Exception as e:  # Hydra's own override/compose errors
    sys.exit(f"config error: {type(e).__name__}: {e}")
print(Path(cfg.output_dir).expanduser().absolute())
print(cfg.experiment_name)
print(Path(OmegaConf.select(cfg, "train.export_dir") or cfg.output_dir).expanduser().absolute())
PYEOF
)
[[ ${#resolved[@]} -eq 3 ]] || exit 2
OUT="${resolved[0]}"
NAME="t2vturbo-${resolved[1]}"
REPORT_DIR="${resolved[2]}"
mkdir -p "$OUT/slurm"

args=(--parsable --chdir="$REPO" --job-name="$NAME" --output="$OUT/slurm/%x-%j.out"
      --nodes="$NODES" --ntasks-per-node="$TASKS")
[[ "$GPUS" -gt 0 ]] && args+=(--gpus-per-node="$GPUS")
[[ -n "$CPUS" ]] && args+=(--cpus-per-task="$CPUS")
[[ -n "$PARTITION" ]] && args+=(--partition="$PARTITION")
[[ -n "$TIME" ]] && args+=(--time="$TIME")
args+=(${EXTRA[@]+"${EXTRA[@]}"})

jid="$(T2V_PYTHON="$PY" T2V_REPO="$REPO" T2V_REPORT_DIR="$REPORT_DIR" sbatch "${args[@]}" "$REPO/launch/distill.sbatch" "$@")"
jid="${jid%%;*}"
log="$OUT/slurm/$NAME-$jid.out"
echo "submitted job $jid ($NAME: $NODES node(s) x $TASKS task(s))"
echo "  log:    $log"
echo "  output: $OUT"
echo "  status: make distill-status JOB=$jid    cancel: make distill-cancel JOB=$jid"
echo "  checkpoint + requeue now: make distill-cancel JOB=$jid SIGNAL=USR1"
[[ "$WAIT" = 1 ]] || exit 0

last=""
while :; do
    info="$(scontrol show job -o "$jid" 2>/dev/null || true)"
    state="$(grep -o 'JobState=[A-Z_]*' <<<"$info" | cut -d= -f2 || true)"
    restarts="$(grep -o 'Restarts=[0-9]*' <<<"$info" | cut -d= -f2 || true)"
    if [[ "$state/$restarts" != "$last" ]]; then
        echo "[$(date '+%T')] job $jid: ${state:-gone} (restarts ${restarts:-?})"
        last="$state/$restarts"
    fi
    case "$state" in
        COMPLETED) exit 0 ;;
        FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED | "")
            echo "job $jid ended $state; last lines of $log:" >&2
            tail -n 30 "$log" >&2 || true
            exit 1 ;;
    esac
    sleep "$POLL"
done
