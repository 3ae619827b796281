#!/usr/bin/env bash
# Downloads COCO 2017 train/val images and annotations into DATASETS_DIR/coco2017 (about 19 GB of archives).
# Resumable and idempotent: re-run it after an interruption. See download_common.sh for the environment.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=download_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/download_common.sh"
parse_args "usage: bash data/scripts/COCO2017.sh [DATASETS_DIR]   (default: the repository's datasets/)
  COCO_BASE_URL overrides the server (default http://images.cocodataset.org)" "$@"

command -v unzip >/dev/null 2>&1 || die "unzip is not installed; install it (e.g. apt-get install unzip)"
root=$(datasets_dir "${1:-}")
base=${COCO_BASE_URL:-http://images.cocodataset.org}
# MD5s as published by the COCO download registries (e.g. PaddleDetection, torchgeo, the LVIS archives list).
install_archive "$base/annotations/annotations_trainval2017.zip" f4bbac642086de4f52a3fdda2de5fa2c "$root" coco2017 annotations \
    instances_train2017.json instances_val2017.json
install_archive "$base/zips/val2017.zip" 442b8da7639aecaf257c1dceb8ba8c80 "$root" coco2017 val2017
install_archive "$base/zips/train2017.zip" cced6f7f71b7629ddf16f17bbcfab6b2 "$root" coco2017 train2017
info "COCO 2017 ready in $root/coco2017"
