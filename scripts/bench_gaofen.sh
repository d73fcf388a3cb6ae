#!/usr/bin/env bash
# Times `detect` on a pair of GF-2 L1A products placed by RPCs (read as delivered, on a DEM)
# against the same pair orthorectified beforehand by gdalwarp, in the same run.
# usage: scripts/bench_gaofen.sh [SIZE_PX=4000] [WORKDIR=/tmp/gengbao-bench-gaofen]
# The products are generated: SIZE x SIZE px of 4 m, four bands of fields with texture,
# affine RPCs with a height term, a product .xml, and a DEM in degrees with relief.
set -euo pipefail
size=${1:-4000}
work=${2:-/tmp/gengbao-bench-gaofen}
if ! [[ "$size" =~ ^[0-9]+$ ]]; then
  echo "SIZE_PX must be a number of pixels, not $size" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$PWD/target/release/gengbao
# Only a folder this script made is removed.
if [ -e "$work" ] && [ ! -e "$work/.bench_gaofen" ]; then
  echo "$work exists and was not made by this script: give another WORKDIR" >&2
  exit 2
fi
rm -rf "$work"
mkdir -p "$work/ortho"
touch "$work/.bench_gaofen"
cd "$work"
/usr/bin/python3 - "$size" <<'PY'
import sys
import numpy as np
from osgeo import gdal, osr

n = int(sys.argv[1])
lat0, lon0, pixel = 32.0, 118.8, 4.0
lat_scale = n / 2 * pixel / 111320.0
lon_scale = lat_scale / np.cos(np.radians(lat0))


def terms(pairs):
    c = [0.0] * 20
    for k, v in pairs.items():
        c[k] = v
    return " ".join(str(v) for v in c)


def product(name, seed):
    ds = gdal.GetDriverByName("GTiff").Create(
        name + ".tiff", n, n, 4, gdal.GDT_UInt16, ["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetMetadata({
        "LINE_OFF": str(n / 2), "SAMP_OFF": str(n / 2),
        "LINE_SCALE": str(n / 2), "SAMP_SCALE": str(n / 2),
        "LAT_OFF": str(lat0), "LONG_OFF": str(lon0),
        "LAT_SCALE": str(lat_scale), "LONG_SCALE": str(lon_scale),
        "HEIGHT_OFF": "0", "HEIGHT_SCALE": "500",
        "LINE_NUM_COEFF": terms({2: -1.0}), "LINE_DEN_COEFF": terms({0: 1.0}),
        "SAMP_NUM_COEFF": terms({1: 1.0, 3: 0.002}), "SAMP_DEN_COEFF": terms({0: 1.0}),
    }, "RPC")
    rng = np.random.default_rng(seed)
    fields = rng.integers(0, 3, (n // 100 + 1, n // 100 + 1))
    kind = np.kron(fields, np.ones((100, 100), int))[:n, :n]
    dn = np.array([[300, 500, 400, 2500], [900, 1000, 1100, 1500], [400, 450, 350, 600]])
    for b in range(4):
        texture = 1 + 0.05 * rng.standard_normal((n, n))
        ds.GetRasterBand(b + 1).WriteArray((dn[kind, b] * texture).astype(np.uint16))
    ds = None
    with open(name + ".xml", "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<ProductMetaData>\n'
                "<SatelliteID>GF2</SatelliteID>\n<SensorID>PMS1</SensorID>\n"
                "<ProductLevel>LEVEL1A</ProductLevel>\n"
                f"<CenterTime>{name.split('_')[4][:4]}-05-05 11:26:43</CenterTime>\n"
                "<SolarZenith>30</SolarZenith>\n</ProductMetaData>\n")


product("GF2_PMS1_E118.8_N32.0_20180505_L1A0000000001-MSS1", 1)
product("GF2_PMS1_E118.8_N32.0_20190505_L1A0000000002-MSS1", 2)
dem = gdal.GetDriverByName("GTiff").Create("dem.tif", 600, 600, 1, gdal.GDT_Float32)
dem.SetGeoTransform([lon0 - 0.3, 0.001, 0, lat0 + 0.3, 0, -0.001])
srs = osr.SpatialReference()
srs.ImportFromEPSG(4326)
dem.SetProjection(srs.ExportToWkt())
relief = 50 + 30 * np.sin(np.arange(600) / 40.0)
dem.GetRasterBand(1).WriteArray(np.tile(relief, (600, 1)).astype(np.float32))
dem = None
PY
a=GF2_PMS1_E118.8_N32.0_20180505_L1A0000000001-MSS1
b=GF2_PMS1_E118.8_N32.0_20190505_L1A0000000002-MSS1
/usr/bin/time -f "detect, L1A as delivered, on the DEM: %e s, peak RSS %M KB" \
  "$bin" detect --before $a.tiff --after $b.tiff --sensor gf2-pms --dem dem.tif --out out-l1a --quiet >/dev/null
start=$(date +%s%N)
for p in $a $b; do
  gdalwarp -q -rpc -to RPC_DEM=dem.tif -t_srs EPSG:32650 -r bilinear -co TILED=YES -co COMPRESS=DEFLATE $p.tiff ortho/$p.tiff
  cp $p.xml ortho/
done
echo "gdalwarp of both products: $(( ($(date +%s%N) - start) / 1000000 )) ms"
/usr/bin/time -f "detect, orthorectified beforehand: %e s, peak RSS %M KB" \
  "$bin" detect --before ortho/$a.tiff --after ortho/$b.tiff --sensor gf2-pms --out out-ortho --quiet >/dev/null
