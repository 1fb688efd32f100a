# issue 8, run 44: run 43 found torchvision's decoder saturated at the default share (3.5-3.8 of the 4 decode threads
# inside a decode call at any time, ~39 ms of the decoder per batch). Is it still saturated at shares 0.6 and 0.5,
# where run 42 found no gain? And who holds the interpreter lock now (py-spy, as run 37, with slots and the per-batch
# table)? Synthetic; default share with py-spy; shares 0.6, 0.5, 0.7 with every decode call timed (run43_decoder.py).
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run44.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L; python3 --version | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
G="####|epoch [0-9]/3:|Error|error|ERROR|share auto|did not fit|shared memory"
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $D/run43_decoder.py $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "$G" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1 OUT
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
tag=gpu07_pyspy; PYSPY=/tmp/site/bin/py-spy timeout 90 python3 $D/run36_sampler.py $tag -- python3 $D/run43_decoder.py $tag 156 "${COMMON[@]}" /tmp/j4 --decode gpu --output /tmp/r-$tag 2>&1 | grep -E "$G" | tee -a $L; echo "t=$(el)s" | tee -a $L
gzip -f $OUT/pyspy_$tag.txt
run gpu06 75 /tmp/j4 --decode gpu --gpu-decode-share 0.6
[ $(el) -lt 460 ] && run gpu05 72 /tmp/j4 --decode gpu --gpu-decode-share 0.5
[ $(el) -lt 520 ] && run gpu07 72 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
