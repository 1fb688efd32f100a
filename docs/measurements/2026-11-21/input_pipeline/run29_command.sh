# issue 8, run 29: where the training thread waits with --decode gpu (DataLoader next() or the decode
# future), and a feeder thread that takes batches from the DataLoader instead; 40,000-image setup
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run29.log; S=$D/run29_feeder.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
[ -d /tmp/j4 ] || python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
[ -d /tmp/j4 ] || for split in train val; do mkdir -p /tmp/j4/$split; for c in /tmp/j/$split/*; do
  for k in 0 1 2 3; do cp -al $c /tmp/j4/$split/$(basename $c)_$k; done; done; done
echo "hard-linked: $(find /tmp/j4/train -type f | wc -l) train files; folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 50)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 156 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error|share auto" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic 150 --synthetic --synthetic-size 40000 --num-classes 400
run gpu_auto 80 /tmp/j4 --decode gpu
FEEDER=1 run gpu_auto_feeder 80 /tmp/j4 --decode gpu
[ $(el) -lt 430 ] && FEEDER=1 run gpu_auto_feeder_again 80 /tmp/j4 --decode gpu
[ $(el) -lt 500 ] && run gpu_auto_again 80 /tmp/j4 --decode gpu
echo "all done t=$(el)s" | tee -a $L
