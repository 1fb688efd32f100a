# issue 8, run 39: the loader slots (ecanet.batch_slots) on a fresh machine, timing only (no sampler): synthetic,
# --decode gpu with slots (the default since run 38) three times, without slots (NO_SLOTS=1) once, and with slots at
# shares 0.85 and 1 (with the pin-memory thread gone, the best share may have moved).
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run39.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $D/run35_threads.py $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|ERROR|share auto|loader slots|did not fit|shared memory" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_slots 90 /tmp/j4 --decode gpu
NO_SLOTS=1 run gpu_noslots 80 /tmp/j4 --decode gpu
run gpu_slots_again 80 /tmp/j4 --decode gpu
[ $(el) -lt 420 ] && run gpu_slots_share085 75 /tmp/j4 --decode gpu --gpu-decode-share 0.85
[ $(el) -lt 460 ] && run gpu_slots_share1 75 /tmp/j4 --decode gpu --gpu-decode-share 1
[ $(el) -lt 500 ] && run gpu_slots_third 75 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
