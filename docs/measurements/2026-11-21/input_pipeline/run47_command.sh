# issue 8, run 47: the crop kernel writes the finished batch (crop_resize_into) — GPU tests, then synthetic and
# --decode gpu (default share) with the new assembly and as before (OLD_ASSEMBLY=1), alternating.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run47.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_crop.py tests/test_gpu_decode.py tests/test_batch_slots.py 2>&1 | grep -E "passed|failed|FAILED|Error" | tail -5 | tee -a $L
echo "tests t=$(el)s" | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
G="####|epoch [0-9]/3:|Error|error|ERROR|share auto|did not fit|shared memory"
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $D/run47_assembly.py $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "$G" | tail -n 40 | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_fused 85 /tmp/j4 --decode gpu
OLD_ASSEMBLY=1 run gpu_before 75 /tmp/j4 --decode gpu
[ $(el) -lt 455 ] && run gpu_fused_again 70 /tmp/j4 --decode gpu
[ $(el) -lt 525 ] && OLD_ASSEMBLY=1 run gpu_before_again 70 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
