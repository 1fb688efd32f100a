# run 14 (2026-11-21, one H200, 16 cores; bash .exp/call_m.sh, .exp/steps_main.py = run14_steps_main.py, .exp/crop_bench.py = run14_crop_bench.py)
# issue 8, run 14: batched Triton crop-resize for the GPU share; checks, micro-benchmark, training A/B
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 )); L=$OUT/m.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
python3 -c "import torch, triton, torchvision; print('torch', torch.__version__, 'triton', triton.__version__, 'torchvision', torchvision.__version__)" | tee -a $L
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_crop.py tests/test_gpu_decode.py 2>&1 | tail -n 4 | tee -a $L
echo "tests t=$(el)s" | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 200 --val-per-class 2 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
timeout 60 python3 .exp/crop_bench.py /tmp/j 2>&1 | grep -E "####|Error|error" | tee -a $L
echo "crop bench t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 20 --workers $W)
run() { tag=$1; shift; timeout 110 python3 .exp/steps_main.py $tag 78 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic --synthetic --synthetic-size 20000 --num-classes 100
run gpu1_kernel /tmp/j --decode gpu --gpu-decode-share 1
run gpu1_per_image --per-image-crop /tmp/j --decode gpu --gpu-decode-share 1
[ $(el) -lt 480 ] && run gpu05_kernel /tmp/j --decode gpu --gpu-decode-share 0.5
echo "all done t=$(el)s" | tee -a $L
