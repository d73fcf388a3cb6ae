#!/usr/bin/env bash
# Two-date change detection on the peer harness's generated scene (../shared/bench), timed and
# scored the way the peers are: wall time, CPU time, peak RSS, million pixels per second per
# date (2 x W x H / wall) and the harness scorer's object F1.
#
# usage: scripts/bench.sh [--size N] [--runs R] [--peers] [--work DIR]
#   --size   scene side in pixels (default 8192; the harness's 2048 and 8192 are the usual ones)
#   --runs   gengbao runs; the median wall and CPU time and the highest peak RSS are reported
#            (default 3)
#   --peers  also run the harness's OTB, rasterio+sklearn and GDAL pipelines once each, and
#            print gengbao's speed and memory as ratios against them (needs the packages of
#            ../shared/bench/README.md; about 25 min at 8192)
#   --work   scenes and outputs (default /tmp/gengbao-bench2); besides the release build in
#            target/, nothing is written elsewhere
set -euo pipefail
size=8192 runs=3 peers=0 work=/tmp/gengbao-bench2
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --peers) peers=1; shift ;;
    --work) work=$2; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
harness=$(cd "$root/../shared/bench" 2>/dev/null && pwd) || {
  echo "error: ../shared/bench is missing beside the checkout; it holds the scene generator and scorer" >&2
  exit 1
}
for tool in /usr/bin/python3 /usr/bin/time /usr/bin/bc; do
  [ -x "$tool" ] || { echo "error: $tool is missing: apt-get install python3 time bc" >&2; exit 1; }
done
/usr/bin/python3 -c "import osgeo, scipy, numpy" 2>/dev/null || {
  echo "error: the scorer needs python3-gdal python3-scipy python3-numpy (see $harness/README.md)" >&2
  exit 1
}
scene=$work/scenes/s$size
mkdir -p "$work/scenes" "$work/runs"
if [ ! -f "$scene/scene.json" ]; then
  echo "generating the ${size}x${size} scene into $scene"
  /usr/bin/python3 "$harness/gen/generate_scene.py" "$scene" --size "$size" > "$work/scenes/gen$size.log"
fi
(cd "$root" && cargo build --release -q)
bin=$root/target/release/gengbao

# One timed run: NAME OUT -- COMMAND...; appends "name wall cpu rss_kib" to $work/runs/times.
timed() {
  local name=$1 out=$2; shift 3
  rm -rf "$out"; mkdir -p "$out"
  /usr/bin/time -v -o "$out/time.txt" "$@" > "$out/run.log" 2>&1 || {
    echo "error: $name failed; see $out/run.log" >&2; tail -5 "$out/run.log" >&2; return 1; }
  awk -v n="$name" -F': ' '
    /Elapsed/ { split($2, t, ":"); wall = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
    /User time/ { cpu += $2 } /System time/ { cpu += $2 }
    /Maximum resident/ { rss = $2 }
    END { printf "%s %.2f %.2f %d\n", n, wall, cpu, rss }' "$out/time.txt" >> "$work/runs/times"
}
# Scores the results in DIR; prints "f1 precision recall", or stops the script naming the log.
score() {
  /usr/bin/python3 "$harness/common/eval.py" "$scene" "$1" > "$1/eval.log" 2>&1 || {
    echo "error: scoring $1 failed; see $1/eval.log" >&2; exit 1; }
  /usr/bin/python3 -c "import json,sys; o=json.load(open(sys.argv[1]+'/eval.json'))['objects']; print(o['f1'], o['precision'], o['recall'])" "$1"
}

rm -f "$work/runs/times" "$work/runs/f1"
for r in $(seq "$runs"); do
  timed gengbao "$work/runs/gengbao" -- "$bin" detect \
    --before "$scene/t1.tif" --after "$scene/t2.tif" --farmland "$scene/parcels.gpkg" \
    --add-offset 0 --samples-before "$scene/train_t1.gpkg" --samples-after "$scene/train_t2.gpkg" \
    --abandonment --quiet --out "$work/runs/gengbao/out"
done
scores=$(score "$work/runs/gengbao/out")
read -r g_f1 g_p g_r <<< "$scores"
if [ "$peers" = 1 ]; then
  timed otb "$work/runs/otb" -- "$harness/peers/otb/run_otb.sh" "$scene" "$work/runs/otb"
  timed py_sklearn "$work/runs/py_sklearn" -- /usr/bin/python3 "$harness/peers/py_sklearn/run_sklearn.py" "$scene" "$work/runs/py_sklearn"
  timed gdal_rules "$work/runs/gdal_rules" -- "$harness/peers/gdal_rules/run_gdal.sh" "$scene" "$work/runs/gdal_rules"
  for p in otb py_sklearn gdal_rules; do
    scores=$(score "$work/runs/$p")
    echo "$p $scores" >> "$work/runs/f1"
  done
fi

echo
echo "scene ${size}x${size} ($scene), $(nproc) cores, $(date -u +%Y-%m-%d)"
printf "%-11s %9s %9s %9s %13s %8s %6s %6s\n" tool "wall s" "CPU s" "RSS MiB" "Mpx/s/date" "obj F1" P R
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2 }'; }
gw=$(awk '$1 == "gengbao" { print $2 }' "$work/runs/times" | median)
gc=$(awk '$1 == "gengbao" { print $3 }' "$work/runs/times" | median)
grss=$(awk '$1 == "gengbao" && $4 > m { m = $4 } END { print m }' "$work/runs/times")
printf "%-11s %9.2f %9.2f %9.0f %13.2f %8s %6s %6s  (median of %d runs)\n" gengbao "$gw" "$gc" \
  "$(echo "$grss / 1024" | bc -l)" "$(echo "2 * $size * $size / 1000000 / $gw" | bc -l)" "$g_f1" "$g_p" "$g_r" "$runs"
if [ "$peers" = 1 ]; then
  while read -r name wall cpu rss; do
    [ "$name" = gengbao ] && continue
    read -r _ f1 p r < <(grep "^$name " "$work/runs/f1")
    printf "%-11s %9.2f %9.2f %9.0f %13.2f %8s %6s %6s  gengbao is %.1fx faster, uses %.2fx the memory\n" \
      "$name" "$wall" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$(echo "2 * $size * $size / 1000000 / $wall" | bc -l)" \
      "$f1" "$p" "$r" "$(echo "$wall / $gw" | bc -l)" "$(echo "$grss / $rss" | bc -l)"
  done < "$work/runs/times"
fi
