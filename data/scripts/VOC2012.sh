#!/usr/bin/env bash
# Downloads PASCAL VOC 2012 trainval into DATASETS_DIR/VOCdevkit/VOC2012 (about 2 GB).
# Resumable and idempotent: re-run it after an interruption. See download_common.sh for the environment.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=download_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/download_common.sh"
parse_args "usage: bash data/scripts/VOC2012.sh [DATASETS_DIR]   (default: the repository's datasets/)
  VOC_BASE_URL overrides the server (default http://host.robots.ox.ac.uk/pascal/VOC)" "$@"

root=$(datasets_dir "${1:-}")
base=${VOC_BASE_URL:-http://host.robots.ox.ac.uk/pascal/VOC}
# MD5 as published with torchvision.datasets.VOCDetection.
install_archive "$base/voc2012/VOCtrainval_11-May-2012.tar" 6cd6e144f989b92b3379bac3b3de84fd "$root" . VOCdevkit/VOC2012 \
    ImageSets/Main/trainval.txt
info "VOC2012 ready in $root/VOCdevkit/VOC2012"
