# issue 8, run 35: the training process thread by thread (run35_threads.py: CPU, run-queue wait, context switches per
# step, over steps 30-150 of epoch 2) on the 40,000-image setup of runs 24-34 (156-step epochs), synthetic vs
# --decode gpu (default share); then three candidate fixes: workers kept off 3 cores, fused SGD, niced workers.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run35.log; S=$D/run35_threads.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|ERROR|share auto" | tee -a $L; cp /tmp/steps_$tag.json $OUT/ 2>/dev/null; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_auto 90 /tmp/j4 --decode gpu
RESERVE_CORES=3 run gpu_auto_reserve3 90 /tmp/j4 --decode gpu
FUSED_SGD=1 run gpu_auto_fused 90 /tmp/j4 --decode gpu
[ $(el) -lt 430 ] && WORKER_NICE=10 run gpu_auto_nice10 80 /tmp/j4 --decode gpu
[ $(el) -lt 500 ] && run gpu_auto_again 80 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
