#!/usr/bin/env bash
# Measures what a period costs as shards: the tile stage of a shard and the merge, on
# generated cities of growing size, and projects a province (1e9 px) and the country's
# farmland regions (3e10 px) onto 1, 8 and 64 nodes like this machine.
# usage: scripts/bench_shards.sh ["SIZES"] [WORKDIR]   (defaults: "1024 2048 4096", /tmp/gengbao-shards)
# Give two sizes or more: the merge's cost is fitted as a fixed part plus a part per pixel.
#
# For each size: the city's periods before the last are run once; the last is planned as
# one shard, its tile stage run (`run --shard 0/1`) and merged (`merge`), three times each,
# medians kept. The projection assumes the tile stage divides evenly over nodes (the plan
# balances watched pixels; real imbalance adds to it), the merge stays one process on one
# node (as built), and the cost per pixel measured here holds for real imagery (it does
# not: real products decode JPEG 2000, slower than these GeoTIFFs).
set -euo pipefail
sizes=${1:-"1024 2048 4096"}
work=${2:-/tmp/gengbao-shards}
cd "$(dirname "$0")/.."
[ -x /usr/bin/time ] || { echo "bench_shards: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ "$(printf '%s\n' $sizes | sort -u | wc -l)" -ge 2 ] || { echo "bench_shards: give two different sizes or more" >&2; exit 64; }
# The work folder is emptied: only a new one, or one this script made.
if [ -e "$work" ] && [ ! -e "$work/.bench_shards" ]; then
  echo "bench_shards: $work exists and was not made by this script; give another folder" >&2
  exit 64
fi
cargo build --release -q
bin=$PWD/target/release/gengbao
rm -rf "$work"
mkdir -p "$work"
touch "$work/.bench_shards"
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Wall seconds and peak RSS (KiB) of a command, appended to a file.
timed() { local to=$1; shift; /usr/bin/time -f "%e %M" -a -o "$to" "$@" >/dev/null; }

: > "$work/costs.txt"
for size in $sizes; do
  city="$work/city-$size"
  "$bin" samples --out "$city" --size "$size" --periods 3 >/dev/null
  periods=$(ls -d "$city"/imagery/* | sed -E 's/.*_([0-9]{4})([0-9]{2})[0-9]{2}T.*/\1 \2/' \
    | awk '{ printf "%s-P%d\n", $1, int(($2 - 1) / 2) + 1 }' | sort -u)
  last=$(echo "$periods" | tail -n 1)
  for p in $(echo "$periods" | head -n -1); do
    "$bin" run --config "$city/job.toml" --period "$p" --quiet >/dev/null
  done
  out=$(awk -F'"' '/^output *=/ { print $2; exit }' "$city/job.toml")
  cp -a "$city/$out" "$work/before"
  : > "$work/tile.txt"; : > "$work/merge.txt"
  for _ in 1 2 3; do
    rm -rf "${city:?}/$out"; cp -a "$work/before" "$city/$out"
    "$bin" plan --config "$city/job.toml" --period "$last" --shards 1 >/dev/null
    timed "$work/tile.txt" "$bin" run --config "$city/job.toml" --period "$last" --shard 0/1 --quiet
    timed "$work/merge.txt" "$bin" merge --config "$city/job.toml" --period "$last" --quiet
  done
  rm -rf "$work/before"
  echo "$size $(cut -d' ' -f1 "$work/tile.txt" | median) $(cut -d' ' -f1 "$work/merge.txt" | median)" \
    "$(cut -d' ' -f2 "$work/merge.txt" | sort -n | tail -n 1)" >> "$work/costs.txt"
done

awk -v cores="$(nproc)" '
  { px = $1 * $1 / 1e6; n++; x[n] = px; tile[n] = $2; merge[n] = $3; rss[n] = $4
    printf "%5d px  %7.1f Mpx  tile stage %6.2f s (%.2f Mpx/s)  merge %6.2f s (%.2f Mpx/s)  merge peak RSS %d MiB\n",
      $1, px, $2, px / $2, $3, px / $3, $4 / 1024 }
  END {
    # Least squares of seconds against Mpx: a fixed part and a part per Mpx.
    for (i = 1; i <= n; i++) { sx += x[i]; sy += merge[i]; st += tile[i] }
    mx = sx / n; my = sy / n; mt = st / n
    for (i = 1; i <= n; i++) { sxx += (x[i] - mx)^2; sxy += (x[i] - mx) * (merge[i] - my); sxt += (x[i] - mx) * (tile[i] - mt) }
    mb = (n > 1) ? sxy / sxx : my / mx; ma = my - mb * mx
    tb = (n > 1) ? sxt / sxx : mt / mx; ta = mt - tb * mx
    printf "\nper node of %d cores: tile stage %.3f s + %.4f s/Mpx; merge %.3f s + %.4f s/Mpx\n", cores, ta, tb, ma, mb
    printf "\n| area | nodes | tile stage | merge | period wall | merge share |\n|---|---|---|---|---|---|\n"
    split("1e9 3e10", areas, " "); split("province country", names, " ")
    for (a = 1; a <= 2; a++) {
      mpx = areas[a] / 1e6
      for (k = 1; k <= 3; k++) {
        nodes = (k == 1) ? 1 : (k == 2) ? 8 : 64
        t = ta + tb * mpx / nodes; m = ma + mb * mpx
        printf "| %s (%s px) | %d | %.1f min | %.1f min | %.2f h | %.0f %% |\n", names[a], areas[a], nodes, t / 60, m / 60, (t + m) / 3600, 100 * m / (t + m)
      }
    }
  }' "$work/costs.txt"
