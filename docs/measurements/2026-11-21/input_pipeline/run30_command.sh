# issue 8, run 30: GPU tests of this change, then two (three) batches per nvJPEG call against one;
# 40,000-image setup of runs 24-29 (156-step epochs)
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run30.log; S=$D/run30_group.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
python3 -m pytest -q -p no:cacheprovider tests/test_gpu_decode.py tests/test_gpu_crop.py tests/test_engine.py 2>&1 | tail -3 | tee -a $L
echo "tests t=$(el)s" | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|share auto" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
PER_CALL=2 run gpu_auto_2 80 /tmp/j4 --decode gpu
PER_CALL=1 run gpu_auto_1 80 /tmp/j4 --decode gpu
PER_CALL=2 run gpu1_2 80 /tmp/j4 --decode gpu --gpu-decode-share 1
[ $(el) -lt 460 ] && PER_CALL=3 run gpu_auto_3 75 /tmp/j4 --decode gpu
[ $(el) -lt 525 ] && PER_CALL=2 run gpu_auto_2_again 70 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
