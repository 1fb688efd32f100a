# issue 8, run 34: run 33 again with the loader process fixed: its DataLoader workers are forked, as in the training
# process (a spawned process spawns its own children by default: runs 31-33 spawned 15 workers, each importing
# torch). Steady state on the 40,000-image setup of runs 24-33 (156-step epochs): synthetic, --decode gpu (default
# share) with --loader-process and without, twice each if time allows, share 1 and --decode cpu with it.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run34.log; S=$D/run25_steps_cpu.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3|Error|error|ERROR|share auto|loader process|loader runs" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_auto_process 90 /tmp/j4 --decode gpu --loader-process
run gpu_auto 80 /tmp/j4 --decode gpu
run gpu_auto_process_again 90 /tmp/j4 --decode gpu --loader-process
[ $(el) -lt 440 ] && run gpu1_process 80 /tmp/j4 --decode gpu --gpu-decode-share 1 --loader-process
[ $(el) -lt 510 ] && run cpu_process 80 /tmp/j4 --decode cpu --loader-process
[ $(el) -lt 530 ] && timeout 60 python3 -m pytest -q -rA -p no:cacheprovider tests/test_gpu_decode.py -k loader_process 2>&1 | grep -E "^(PASSED|FAILED|ERROR)|passed|failed" | tee -a $L
echo "all done t=$(el)s" | tee -a $L
