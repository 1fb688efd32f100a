# issue 8, run 45: Inductor's C++ wrapper for the compiled training step (run45_cpp_wrapper.py), synthetic and
# --decode gpu (default share), against the Python wrapper's synthetic run on the same machine.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run45.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
G="####|epoch [0-9]/3:|Error|error|ERROR|share auto|did not fit|shared memory"
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $D/run45_cpp_wrapper.py $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "$G" | tail -n 40 | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
CPP_WRAPPER=1 run synthetic_cpp 230 --synthetic --synthetic-size 40000 --num-classes 400
CPP_WRAPPER=1 run gpu_cpp 90 /tmp/j4 --decode gpu
run synthetic 140 --synthetic --synthetic-size 40000 --num-classes 400
[ $(el) -lt 510 ] && CPP_WRAPPER=1 run gpu_cpp_again 80 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
