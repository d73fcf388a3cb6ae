#!/usr/bin/env bash
# Times the bimonthly job on a generated city and prints per-period throughput.
# usage: scripts/bench_pipeline.sh [SIZE_PX=2048] [PERIODS=3] [WORKDIR=/tmp/gengbao-bench]
# Reports the median wall time per period over the periods run, peak RSS, and megapixels of
# job grid per second (each period reads 4 acquisitions x 10 bands + SCL).
set -euo pipefail
size=${1:-2048}
periods=${2:-3}
work=${3:-/tmp/gengbao-bench}
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release/gengbao
rm -rf "$work"
mkdir -p "$work"
$bin samples --out "$work/city" --size "$size" --periods "$periods" >/dev/null
for p in $(ls -d "$work"/city/imagery/* | sed -E 's/.*_([0-9]{4})([0-9]{2})[0-9]{2}T.*/\1 \2/' | awk '{printf "%s-P%d\n", $1, int(($2-1)/2)+1}' | sort -u); do
  /usr/bin/time -f "$p %e %M" -a -o "$work/times.txt" $bin run --config "$work/city/job.toml" --period "$p" --quiet >/dev/null 2>&1
done
cores=$(nproc)
sort -k2 -n "$work/times.txt" | awk -v size="$size" -v cores="$cores" '
  { t[NR]=$2; if ($3>rss) rss=$3 }
  END {
    med=(NR%2)?t[(NR+1)/2]:(t[NR/2]+t[NR/2+1])/2;
    printf "city %dx%d px, %d periods, %d cores\n", size, size, NR, cores;
    printf "median wall per period: %.2f s  (%.1f Mpx of job grid per second)\n", med, size*size/1e6/med;
    printf "peak RSS: %.0f MiB\n", rss/1024;
  }'
