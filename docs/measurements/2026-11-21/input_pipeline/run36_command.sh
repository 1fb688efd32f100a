# issue 8, run 36: run 35 found no wait for cores (run-queue wait ~0) but 58-74 voluntary context switches per step
# in each training thread with --decode gpu (1 on synthetic data). Where do they sleep? run36_sampler.py samples
# every thread's system call from outside (futex addresses inside _PyRuntime = the interpreter's GIL and
# friends); synthetic vs --decode gpu (default share), then --decode gpu without the DataLoader's pin thread.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run36.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
cat /proc/sys/kernel/yama/ptrace_scope 2>&1 | sed 's/^/ptrace_scope: /' | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $D/run36_sampler.py $tag -- python3 $D/run35_threads.py $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|ERROR|share auto" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_auto 90 /tmp/j4 --decode gpu
NO_PIN=1 run gpu_auto_nopin 90 /tmp/j4 --decode gpu
[ $(el) -lt 430 ] && run gpu_auto_again 80 /tmp/j4 --decode gpu
[ $(el) -lt 500 ] && NO_PIN=1 run gpu_auto_nopin_again 80 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
