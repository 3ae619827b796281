#!/usr/bin/env bash
# Downloads PASCAL VOC 2007 trainval + test into DATASETS_DIR/VOCdevkit/VOC2007 (about 870 MB of archives).
# Resumable and idempotent: re-run it after an interruption. See download_common.sh for the environment.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=download_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/download_common.sh"
parse_args "usage: bash data/scripts/VOC2007.sh [DATASETS_DIR]   (default: the repository's datasets/)
  VOC_BASE_URL overrides the server (default http://host.robots.ox.ac.uk/pascal/VOC)" "$@"

root=$(datasets_dir "${1:-}")
base=${VOC_BASE_URL:-http://host.robots.ox.ac.uk/pascal/VOC}
# MD5s as published with torchvision.datasets.VOCDetection.
install_archive "$base/voc2007/VOCtrainval_06-Nov-2007.tar" c52e279531787c972589f7e41ab4ae64 "$root" . VOCdevkit/VOC2007 \
    ImageSets/Main/trainval.txt
install_archive "$base/voc2007/VOCtest_06-Nov-2007.tar" b6e924de25625d8de591ea690078ad9f "$root" . VOCdevkit/VOC2007 \
    ImageSets/Main/test.txt
info "VOC2007 ready in $root/VOCdevkit/VOC2007"
