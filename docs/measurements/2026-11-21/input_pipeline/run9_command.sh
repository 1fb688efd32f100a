# run 9 (2026-11-21 16:08 UTC, one H200, 16 cores; working tree over commit bc3bf59 with the since-removed --gpu-decoder nvimgcodec option): bash .exp/call_g.sh, .exp/with_gpu_load.py = run8_with_gpu_load.py plus REGION_DECODE/NVIMG_THREADS switches, .exp/steps_main.py = run7_steps_main.py; nvImageCodec 0.9.0.20 + nvidia-nvjpeg 13.3.2.43 carried as wheels
# issue 8, session 4: nvImageCodec decoder; loader idle/busy, then training mid-epoch vs synthetic
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 ))
L=$OUT/g.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
python3 -c "import torch, torchvision; from nvidia import nvimgcodec; print(torch.__version__, torch.version.cuda, torchvision.__version__, nvimgcodec.__version__)" 2>&1 | tail -1 | tee -a $L
git log --oneline -1 | tee -a $L; git status --short | head -20 | tee -a $L
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_decode.py 2>&1 | grep -vE "^\s*$|WARNING|ERROR\]" | tail -n 25 | tee -a $L
echo "t=$(el)s" | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 200 --val-per-class 2 2>&1 | tail -1 | tee -a $L
echo "folder done t=$(el)s" | tee -a $L
lb() { tag=$1; shift; echo "=== $tag" | tee -a $L; timeout 100 env "$@" python3 .exp/with_gpu_load.py --loader gpu --gpu-decode-share 1 --data /tmp/j --batch-size 256 --loader-batches 15 --repeats 2 --workers $W --json $OUT/loader_$tag.json ${DEC} 2>&1 | grep -vE " INFO |^\s*$" | grep -E "img/s|####|\||Error|error" | tail -n 8 | tee -a $L; }
DEC="--gpu-decoder torchvision nvimgcodec" lb idle GPU_LOAD=0
DEC="--gpu-decoder torchvision nvimgcodec" lb busy GPU_LOAD=1
DEC="--gpu-decoder nvimgcodec" lb busy_whole_image GPU_LOAD=1 REGION_DECODE=0
echo "loader done t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 2 -p 20 --workers $W)
run() { tag=$1; shift; timeout 150 python3 .exp/steps_main.py $tag 78 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/2:|Error|error|decoded by" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic --synthetic --synthetic-size 20000 --num-classes 100
run gpu_nvimgcodec /tmp/j --decode gpu --gpu-decoder nvimgcodec
[ $(el) -lt 440 ] && run cpu /tmp/j --decode cpu
cp /tmp/r-*/metrics.jsonl $OUT/ 2>/dev/null; for r in /tmp/r-*; do cp $r/metrics.jsonl $OUT/$(basename $r)_metrics.jsonl 2>/dev/null; done
echo "all done t=$(el)s" | tee -a $L
