#!/usr/bin/env bash
# torch.distributed environment of one Slurm task, then exec the command given:
#
#     srun launch/slurm_env.sh python -m t2vturbo.distill key=value ...
#
# RANK=SLURM_PROCID, LOCAL_RANK=SLURM_LOCALID, WORLD_SIZE=tasks of the step, LOCAL_WORLD_SIZE=tasks of
# the step on this node, MASTER_ADDR=first host of the step's node list, MASTER_PORT=10000 + job id
# mod 20000 (the same on every node, below the usual ephemeral range; set T2V_MASTER_PORT to override).
# engine.init_distributed picks NCCL on GPU and gloo on CPU. With no command it only exports (source it).
# t2vturbo/distill.py does the same derivation when started by srun without RANK (submitit jobs).

_t2v_expand_counts() {  # "2(x3),1" -> "2 2 2 1" (Slurm's compressed tasks-per-node list)
    local item out=()
    IFS=, read -ra _items <<<"$1"
    for item in "${_items[@]}"; do
        if [[ $item =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
            for ((k = 0; k < BASH_REMATCH[2]; k++)); do out+=("${BASH_REMATCH[1]}"); done
        else
            out+=("$item")
        fi
    done
    echo "${out[@]}"
}

if [[ -n "${SLURM_STEP_ID:-}" && -n "${SLURM_PROCID:-}" ]]; then  # inside an srun step (not the batch shell)
    export RANK="$SLURM_PROCID"
    export LOCAL_RANK="${SLURM_LOCALID:-0}"
    export WORLD_SIZE="${SLURM_STEP_NUM_TASKS:-${SLURM_NTASKS:-1}}"
    _counts=($(_t2v_expand_counts "${SLURM_STEP_TASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-1}}"))
    export LOCAL_WORLD_SIZE="${_counts[${SLURM_NODEID:-0}]:-${_counts[0]}}"
    _nodes="${SLURM_STEP_NODELIST:-${SLURM_JOB_NODELIST:-}}"
    # Derived from the job, never inherited: a MASTER_ADDR/PORT exported in the submitting shell
    # (sbatch passes the environment on) would point every job at the same, possibly busy, port.
    # T2V_MASTER_ADDR / T2V_MASTER_PORT override on purpose.
    MASTER_ADDR="${T2V_MASTER_ADDR:-}"
    if [[ -z "$MASTER_ADDR" ]] && [[ -n "$_nodes" ]] && command -v scontrol >/dev/null; then
        MASTER_ADDR="$(scontrol show hostnames "$_nodes" | head -n 1)"
    fi
    export MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
    export MASTER_PORT="${T2V_MASTER_PORT:-$((10000 + ${SLURM_JOB_ID:-0} % 20000))}"
    # CPU ranks: one OpenMP pool per task's own CPUs (GPU ranks barely use it).
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
    unset _nodes _counts
fi

if [[ $# -gt 0 ]]; then
    # The trainer installs its USR1/USR2 handlers (checkpoint, then requeue) at start-up; until then
    # an early preemption notice is ignored instead of killing the task.
    trap '' USR1 USR2
    exec "$@"
fi
