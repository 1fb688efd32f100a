# issue 7 re-timing after the per-channel-shift change (first sample's channel means), plus GPU tests
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
L=$OUT/j.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
timeout 150 python3 -m pytest -q -p no:cacheprovider -x tests/test_gpu_decode.py tests/test_bn_eca_decomposed.py tests/test_eca_fused.py 2>&1 | tail -n 3 | tee -a $L
timeout 330 python3 scripts/benchmark.py --batch-size 256 --amp bf16 --channels-last --repeats 3 --archs eca_resnet50 resnet50 --eca-impl auto --cases train-compiled --json $OUT/throughput.json 2>&1 | grep -vE " INFO " | tail -n 25 | tee -a $L
