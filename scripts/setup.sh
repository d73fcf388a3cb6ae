#!/usr/bin/env bash
# Installs the system libraries gengbao builds and tests against (Debian 12).
# Idempotent: packages already present are skipped, so re-running is cheap.
set -euo pipefail

packages=(
  pkg-config      # lets the gdal crate find libgdal
  libgdal-dev     # GDAL 3.6: raster/vector I/O, warping, polygonize
  libsqlite3-dev  # the patch ledger links the SQLite GDAL uses (one copy in the process)
  gdal-bin        # ogrinfo/gdalinfo, used by tests to check outputs the way a user would
  libtorch-dev    # libtorch 1.13: the learned classifier (tch 0.10)
  python3-torch   # makes TorchScript fixtures in tests (/usr/bin/python3)
  clang libclang-dev  # needed by crates that generate bindings at build time
  fonts-wqy-microhei  # text in images (Chinese and Latin): maps, chips, `gengbao eval` plots
  chromium            # tests look at the dispatch report and the portal in a real browser (headless)
  chromium-driver     # WebDriver for Chromium: the portal's browser tests drive the page through it
  openssl curl        # the portal's TLS test makes a certificate and speaks HTTPS to it
  slurmctld slurmd slurm-client munge  # the shards test submits to a one-node Slurm (scripts/slurm-local.sh)
  libopenblas0-openmp # fast BLAS for libtorch's matrix products (see below)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages already installed"
fi

# libtorch multiplies matrices through the system BLAS (libblas.so.3), which Debian points at
# the slow reference implementation unless another is chosen. OpenBLAS built on OpenMP shares
# libtorch's OpenMP threads: the learned model runs 3x faster with it (benches/classify.rs).
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
if [ -e "$openblas" ] && [ "$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)" != "$openblas" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu "$openblas"
fi
