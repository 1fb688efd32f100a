#!/usr/bin/env bash
# SLURM: ECA-ResNet-50 on ImageNet, 2 nodes x 8 GPUs, preemptible and requeued automatically.
#
#   sbatch scripts/slurm_train.sh /path/to/imagenet
#
# The paper's config shares 256 images a step among the 16 GPUs (16 each); add -b N for N per GPU.
# One task per GPU (srun starts them; ecanet reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and
# rendezvouses on the first node). The same command starts the run and continues it after every requeue:
# --resume auto picks the newest checkpoint in --output (or starts fresh when there is none).
# Before the time limit or a preemption SLURM sends SIGUSR1 (--signal below) to every task: the run
# finishes its step, all ranks agree, rank 0 saves last.pth, and the tasks exit with code 75; this script
# then requeues the job.
#SBATCH --job-name=eca_resnet50
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -uo pipefail

DATA=${1:?usage: sbatch scripts/slurm_train.sh DATA [extra main.py options]}
shift
RUN_DIR=${RUN_DIR:-runs/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
EXIT_PREEMPTED=75

# main.py sets MASTER_ADDR (the job's first node) and MASTER_PORT (29500) from SLURM's variables unless
# they are exported already (ecanet/distributed.py).
export OMP_NUM_THREADS=1

srun --kill-on-bad-exit=0 python main.py "$DATA" --config configs/eca_resnet50.yaml \
    --amp bf16 --channels-last --workers "$((SLURM_CPUS_PER_TASK - 1))" \
    --output "$RUN_DIR" --resume auto "$@"
status=$?

if [ "$status" -eq "$EXIT_PREEMPTED" ]; then
    echo "preempted: checkpoint saved in $RUN_DIR; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
