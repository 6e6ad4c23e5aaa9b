set -x
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && mkdir -p /tmp/site/rollstream && touch /tmp/site/rollstream/__init__.py && ln -sfn "$PWD/services" /tmp/site/rollstream/services && ln -sfn "$PWD/schemas" /tmp/site/rollstream/schemas
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH CUDA_VISIBLE_DEVICES=
python3 -c "import rollstream.services.models.load as l; l.ensure_base_model()"
taskset -c 0-1 python3 -m rollstream.services.cli up --no-view --name pa --set target.minutes=2 --set generator.ahead_batches=0 > $OUT/pa.log 2>&1 &
taskset -c 2-3 python3 -m rollstream.services.cli up --mode sync --no-view --name ps --set target.minutes=2 > $OUT/ps.log 2>&1 &
taskset -c 4-5 python3 -m rollstream.services.cli up --no-view --name pb --set target.minutes=2 --set generator.ahead_batches=0 --set evaluator.min_interval_s=1000 > $OUT/pb.log 2>&1 &
sleep 75
taskset -c 8 python3 benchmarks/stage_cpu.py pa --seconds 25 --out $OUT/cpu-pa.json > $OUT/cpu-pa.txt &
taskset -c 9 python3 benchmarks/stage_cpu.py ps --seconds 25 --out $OUT/cpu-ps.json > $OUT/cpu-ps.txt &
taskset -c 10 python3 benchmarks/stage_cpu.py pb --seconds 25 --out $OUT/cpu-pb.json > $OUT/cpu-pb.txt &
L=$(pgrep -f "run learner --config runs/pa" | head -1); G=$(pgrep -f "run generator --config runs/pa" | head -1); S=$(pgrep -f "name ps" | grep -v taskset | tail -1)
taskset -c 11 py-spy record -d 25 -r 40 -f raw -o $OUT/spy-learner.txt -p $L > /dev/null 2>&1 &
taskset -c 12 py-spy record -d 25 -r 40 -f raw -o $OUT/spy-gen.txt -p $G > /dev/null 2>&1 &
taskset -c 13 py-spy record -d 25 -r 40 -f raw -o $OUT/spy-sync.txt -p $S > $OUT/spy-sync.err 2>&1 &
wait
cp runs/ps/sync_summary.json $OUT/ 2>/dev/null; tail -1 runs/pa/metrics.jsonl > $OUT/pa-metrics.json; tail -1 runs/pb/metrics.jsonl > $OUT/pb-metrics.json; cp runs/pa/eval.jsonl $OUT/pa-eval.jsonl
cat $OUT/cpu-*.txt; cat $OUT/spy-sync.err | tail -3; ls -la $OUT
