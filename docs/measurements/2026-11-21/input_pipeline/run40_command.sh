# issue 8, run 40: the GPU share's crop table built per batch with NumPy (gpu_crop.crop_table_boxes) instead of per
# image from cut views (run 37: the decode threads held the GIL 6.8% of the time, cut_box and crop_table the largest
# part). GPU tests first, then synthetic, --decode gpu (slots, per-batch table) twice and with the per-image table
# (OLD_TABLE=1) twice, alternating, on the 40,000-image setup.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run40.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_crop.py tests/test_gpu_decode.py tests/test_batch_slots.py 2>&1 | grep -E "passed|failed|FAILED|Error" | tail -5 | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $D/run35_threads.py $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|ERROR|share auto|loader slots|did not fit|shared memory" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_batch_table 90 /tmp/j4 --decode gpu
OLD_TABLE=1 run gpu_image_table 80 /tmp/j4 --decode gpu
[ $(el) -lt 440 ] && run gpu_batch_table_again 75 /tmp/j4 --decode gpu
[ $(el) -lt 505 ] && OLD_TABLE=1 run gpu_image_table_again 75 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
