# issue 8, run 42: with the loader slots (runs 38-40) the CPU share's crops reach the GPU more cheaply, and shares
# 0.85 and 1 were slower than 0.7 (run 39). Does the best share now lie below 0.7? Synthetic, then --decode gpu at
# shares 0.5, 0.6, 0.7, 0.4, and 0.5 and 0.6 again, on the 40,000-image setup of runs 24-41 (code as of 477ffeb).
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run42.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $D/run35_threads.py $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|ERROR|share|loader slots|did not fit|shared memory" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_share05 85 /tmp/j4 --decode gpu --gpu-decode-share 0.5
run gpu_share06 75 /tmp/j4 --decode gpu --gpu-decode-share 0.6
run gpu_share07 75 /tmp/j4 --decode gpu --gpu-decode-share 0.7
[ $(el) -lt 440 ] && run gpu_share04 72 /tmp/j4 --decode gpu --gpu-decode-share 0.4
[ $(el) -lt 500 ] && run gpu_share05_again 72 /tmp/j4 --decode gpu --gpu-decode-share 0.5
[ $(el) -lt 520 ] && run gpu_share06_again 70 /tmp/j4 --decode gpu --gpu-decode-share 0.6
echo "all done t=$(el)s" | tee -a $L
