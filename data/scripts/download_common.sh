# shellcheck shell=bash
# Helpers shared by VOC2007.sh, VOC2012.sh and COCO2017.sh. Sourced, not run.
#
# Each archive is downloaded (resumably) to DATASETS_DIR/downloads/NAME.part, its MD5 is checked against the
# published value, then it is extracted and a stamp file records the extraction, so a re-run skips finished
# archives and resumes an interrupted download. Environment:
#   MG_MD5_OVERRIDES  a file in `md5sum` format ("<md5>  <archive name>") whose entries replace the published
#                     checksums (for a mirror that repackages the archives, and for the tests)
#   KEEP_ARCHIVES=1   keep the verified archives in DATASETS_DIR/downloads after extraction (default: delete)

set -o errtrace  # the ERR trap below also fires inside functions

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

info() {
    printf '%s\n' "$*"
}

trap 'printf "error: %s: command \"%s\" failed (line %s); re-run the script to resume\n" "$0" "$BASH_COMMAND" "$LINENO" >&2' ERR

# datasets_dir [DIR]: the DIR argument, or the repository's datasets/ folder; made absolute.
datasets_dir() {
    local dir=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/datasets"}
    mkdir -p "$dir" || die "cannot create the datasets folder $dir"
    (cd "$dir" && pwd)
}

# parse_args SCRIPT_USAGE "$@": handles -h/--help and rejects more than one argument.
parse_args() {
    local usage=$1
    shift
    if [[ ${1:-} == -h || ${1:-} == --help ]]; then
        info "$usage"
        exit 0
    fi
    if (($# > 1)); then
        printf '%s\n' "$usage" >&2
        exit 2
    fi
}

# require_md5_tool: stops (in this shell, not in a $(...) subshell, and before any download) without md5sum or md5.
require_md5_tool() {
    command -v md5sum >/dev/null 2>&1 || command -v md5 >/dev/null 2>&1 ||
        die "neither md5sum nor md5 is installed; install coreutils"
}

md5_of() {
    if command -v md5sum >/dev/null 2>&1; then
        md5sum "$1" | cut -d ' ' -f 1
    else
        md5 -q "$1"
    fi
}

# expected_md5 NAME PUBLISHED: the checksum NAME must have (an MG_MD5_OVERRIDES entry wins).
expected_md5() {
    local name=$1 published=$2 override=""
    if [[ -n ${MG_MD5_OVERRIDES:-} ]]; then
        [[ -f $MG_MD5_OVERRIDES ]] || die "MG_MD5_OVERRIDES=$MG_MD5_OVERRIDES is not a file"
        override=$(awk -v name="$name" '$2 == name || $2 == "*" name { print $1; exit }' "$MG_MD5_OVERRIDES")
    fi
    printf '%s\n' "${override:-$published}"
}

# fetch_failed URL FILE TOOL STATUS WRITE_ERROR_STATUS: the error for a failed download; a write error (curl 23,
# wget 3: a full disk, most often) is not the network's.
fetch_failed() {
    local url=$1 file=$2 tool=$3 status=$4
    if ((status == $5)); then
        die "could not write $file ($tool exit $status): is the disk full? free space in $(dirname "$file") (df -h shows it), then re-run to resume"
    fi
    die "download of $url failed ($tool exit $status); check the network or the URL, then re-run to resume"
}

# fetch URL FILE: download URL to FILE, continuing a partial FILE.
fetch() {
    local url=$1 file=$2
    if command -v curl >/dev/null 2>&1; then
        curl --fail --location --retry 3 --continue-at - --output "$file" "$url" ||
            fetch_failed "$url" "$file" curl $? 23
    elif command -v wget >/dev/null 2>&1; then
        wget --continue --tries=3 --output-document="$file" "$url" || fetch_failed "$url" "$file" wget $? 3
    else
        die "neither curl nor wget is installed; install one of them"
    fi
}

# download_verified URL PUBLISHED_MD5 DIR: leaves DIR/<archive name>, whose MD5 has been checked.
download_verified() {
    local url=$1 md5 name archive actual
    require_md5_tool
    name=$(basename "$url")
    md5=$(expected_md5 "$name" "$2")
    archive="$3/$name"
    if [[ -f $archive && $(md5_of "$archive") == "$md5" ]]; then
        info "$name: already downloaded and verified"
        return 0
    fi
    info "downloading $url"
    fetch "$url" "$archive.part"
    info "verifying the MD5 of $name"
    actual=$(md5_of "$archive.part")
    if [[ $actual != "$md5" ]]; then
        mv -f "$archive.part" "$archive.corrupt"
        die "checksum mismatch for $name: expected MD5 $md5, got $actual (moved to $archive.corrupt). The download is corrupt or the server sent another file; delete $archive.corrupt and re-run"
    fi
    mv -f "$archive.part" "$archive"
}

# install_archive URL PUBLISHED_MD5 DATASETS_DIR EXTRACT_DIR PRODUCES [REQUIRED...]
#   Downloads and verifies the archive, extracts it into EXTRACT_DIR (relative to DATASETS_DIR) and checks that
#   EXTRACT_DIR/PRODUCES exists, and each file PRODUCES/REQUIRED. Skipped when that folder holds the stamp of an
#   earlier extraction and every REQUIRED file is there (a lost one extracts the archive again).
install_archive() {
    local url=$1 md5=$2 root=$3 produces=$5 name archive target stamp extract_failed file
    local extract_dir=$root
    if [[ $4 != . ]]; then
        extract_dir+="/$4"
    fi
    shift 5  # "$@": the REQUIRED files
    name=$(basename "$url")
    target="$extract_dir/$produces"
    stamp="$target/.$name.extracted"
    if [[ -f $stamp ]]; then
        for file in "$@"; do
            if [[ ! -f $target/$file ]]; then
                info "$name: extracted before, but $target/$file is missing: extracting it again"
                rm -f "$stamp"
                break
            fi
        done
    fi
    if [[ -f $stamp ]]; then
        info "$name: already extracted into $target"
        return 0
    fi
    mkdir -p "$root/downloads" "$extract_dir"
    download_verified "$url" "$md5" "$root/downloads"
    archive="$root/downloads/$name"
    info "extracting $name into $extract_dir"
    # the archive's MD5 is verified: a failure is the disk's (full, read-only), and the archive stays for the re-run
    extract_failed="extracting $archive into $extract_dir failed (the message above says why): free space there if the disk is full, then re-run; the verified archive is kept and reused"
    case $name in
        *.tar) tar -xf "$archive" -C "$extract_dir" || die "$extract_failed" ;;
        *.zip) unzip -q -o "$archive" -d "$extract_dir" || die "$extract_failed" ;;
        *) die "unknown archive type: $name" ;;
    esac
    [[ -d $target ]] || die "$name did not contain $produces/; is it the right archive?"
    for file in "$@"; do
        [[ -f $target/$file ]] || die "$name did not contain $produces/$file; is it the right archive?"
    done
    touch "$stamp"
    if [[ ${KEEP_ARCHIVES:-0} != 1 ]]; then
        rm -f "$archive"
    fi
}
