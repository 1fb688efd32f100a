# run 6 (2026-11-21, one H200, 16 cores, commit cb2b282): bash .exp/call_c.sh, with run6_prof_main.py as .exp/prof_main.py
export PYTHONUNBUFFERED=1
W=$(( $(nproc) - 1 ))
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 200 --val-per-class 2 2>&1 | tail -1
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 1 -p 10 --workers $W)
for tag in synthetic gpu cpu; do
  if [ $tag = synthetic ]; then data=(--synthetic --synthetic-size 20000 --num-classes 100); else data=(/tmp/j --decode $tag); fi
  timeout 170 python3 .exp/prof_main.py $tag 40 8 "${data[@]}" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 \
    | grep -E "####|stream|ms/step|CPU self|epoch 1/1" | grep -v "^\s*$" | tee -a $OUT/prof.log
done
