# issue 8, run 31: the training loader in a process of its own (--loader-process, ecanet/loader_process.py):
# its GPU tests, then steady state on the 40,000-image setup of runs 24-30 (156-step epochs): synthetic,
# --decode gpu (default share) in the training process, and the same with --loader-process (twice), share 1
# with it, --decode cpu with it. Also the first version of tests/test_engine.py (c8deaf2), whose two
# freeze-count tests failed on a GPU machine in run 30, again with -rA.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run31.log; S=$D/run25_steps_cpu.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
T="python3 -m pytest -q -rA -p no:cacheprovider"
{ timeout 120 $T tests/test_loader_process.py tests/test_engine.py $D/run31_engine_tests_c8deaf2.py
  timeout 60 $T tests/test_gpu_decode.py -k "loader_process or end_to_end"; } 2>&1 \
  | grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed|Error|assert" | head -60 | tee -a $L
echo "tests t=$(el)s" | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|share auto|loader process|loader runs" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_auto_process 90 /tmp/j4 --decode gpu --loader-process
run gpu_auto 80 /tmp/j4 --decode gpu
[ $(el) -lt 420 ] && run gpu_auto_process_again 90 /tmp/j4 --decode gpu --loader-process
[ $(el) -lt 480 ] && run gpu1_process 90 /tmp/j4 --decode gpu --gpu-decode-share 1 --loader-process
echo "all done t=$(el)s" | tee -a $L
