# issue 8, run 25: is the training loop short of CPU? Same 40,000-image setup as run 24 (156-step epochs).
# Main-process CPU per step; CUDA graphs (--compile-mode reduce-overhead) for synthetic and --decode gpu;
# share 0.5 with CUDA graphs; a 0.1 ms GIL switch interval; one decode thread
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run25.log; S=$D/run25_steps_cpu.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|share auto|skipping cudagraphs" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1
SYN=(--synthetic --synthetic-size 40000 --num-classes 400)
run synthetic 150 "${SYN[@]}"
run gpu_auto 80 /tmp/j4 --decode gpu
run gpu_auto_ro 100 /tmp/j4 --decode gpu --compile-mode reduce-overhead
run synthetic_ro 100 "${SYN[@]}" --compile-mode reduce-overhead
[ $(el) -lt 420 ] && run gpu05_ro 80 /tmp/j4 --decode gpu --gpu-decode-share 0.5 --compile-mode reduce-overhead
[ $(el) -lt 490 ] && SWITCH_MS=0.1 run gpu_auto_switch01 80 /tmp/j4 --decode gpu
[ $(el) -lt 510 ] && run gpu_auto_t1 75 /tmp/j4 --decode gpu --gpu-decode-threads 1
echo "all done t=$(el)s" | tee -a $L
