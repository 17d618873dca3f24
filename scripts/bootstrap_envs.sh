#!/usr/bin/env bash
# Create or update the two development virtual environments of mega-plugin.
#
#   .venvs/hf        torch 2.13 (CPU build), transformers 5.x, mega-plugin[hf,dev] (editable)
#   .venvs/fairseq2  fairseq2 0.8.1 (torch 2.9.1, transformers 4.57.x: the reference MEGA),
#                    mega-plugin[fairseq2,hf,dev] (editable)
#
# Idempotent: an environment is (re)installed only when its stamp file is missing or
# out of date. The stamp hashes pyproject.toml, the install recipe below, the checkout
# path and the Python version, and is written only after the environment was verified,
# so an interrupted run simply starts that environment's installation again.
#
# Usage: bash scripts/bootstrap_envs.sh [--rebuild] [hf] [fairseq2]
#   no environment named: both;  --rebuild: delete the environment(s) first.
# Environment: PYTHON (default python3) is the interpreter the venvs are made from.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENVS="$ROOT/.venvs"

# Install recipes: part of the stamp, so editing one re-installs that environment.
HF_TORCH="torch==2.13.0"
# onnx/onnxruntime/onnxscript: torch.onnx.export(dynamo=True) and its parity tests (tests/hf/test_onnx.py);
# the same pins as the `onnx` extra in pyproject.toml
HF_EXTRA_PKGS=("transformers>=5,<6" "tokenizers" "onnx==1.23.2" "onnxruntime==1.31.1" "onnxscript==0.7.2")
FS2_PIN="fairseq2==0.8.1"
FS2_TRANSFORMERS_PREFIX="4.57"

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

rebuild=0
wanted=()
for arg in "$@"; do
    case "$arg" in
        --rebuild) rebuild=1 ;;
        hf|fairseq2) wanted+=("$arg") ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $arg (expected --rebuild, hf, fairseq2)" ;;
    esac
done
[ "${#wanted[@]}" -gt 0 ] || wanted=(hf fairseq2)

command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
    || die "$PYTHON must be Python >= 3.10"
[ -f pyproject.toml ] || die "no pyproject.toml in $ROOT"

mkdir -p "$VENVS"
# Two bootstraps at once (two terminals, a CI retry) would corrupt the venvs.
if command -v flock >/dev/null; then
    exec 9>"$VENVS/.bootstrap.lock"
    flock 9
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
PIP_FLAGS=(--quiet --progress-bar off)

stamp_of() {  # stamp_of RECIPE... -> hash of everything that defines an environment
    {
        cat pyproject.toml
        printf '%s\n' "$@" "$ROOT"
        "$PYTHON" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

# ensure_venv NAME: make sure .venvs/NAME exists and has a working interpreter.
ensure_venv() {
    local venv="$VENVS/$1"
    if [ "$rebuild" = 1 ] && [ -e "$venv" ]; then
        log "$1: --rebuild: removing $venv"
        rm -rf "$venv"
    fi
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pip' >/dev/null 2>&1; then
        return 0
    fi
    if [ -e "$venv" ]; then
        log "$1: $venv is broken (no working python/pip): recreating it"
        rm -rf "$venv"
    fi
    log "$1: creating virtual environment $venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$venv"
}

# up_to_date NAME STAMP CHECK...: the stamp matches and the quick check passes.
up_to_date() {
    local venv="$VENVS/$1" stamp="$2"
    shift 2
    [ -f "$venv/.mega-plugin-stamp" ] || return 1
    [ "$(cat "$venv/.mega-plugin-stamp")" = "$stamp" ] || { log "$1: pyproject.toml or recipe changed"; return 1; }
    "$@" >/dev/null 2>&1 || { log "$1: stamp is current but the check failed"; return 1; }
}

ensure_libsndfile() {
    # fairseq2n (the native part of fairseq2) dlopens libsndfile at import time.
    # (No `grep -q`: with pipefail an early exit of grep can fail the pipeline.)
    if ldconfig -p 2>/dev/null | grep -F libsndfile >/dev/null; then
        return 0
    fi
    log "fairseq2: system library libsndfile1 is missing: installing it with apt-get"
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "libsndfile1 is missing and this is not root: run 'sudo apt-get install -y libsndfile1'"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y libsndfile1; then
        log "fairseq2: apt-get install failed: running apt-get update and trying again"
        "${sudo[@]}" apt-get update
        "${sudo[@]}" apt-get install -y libsndfile1
    fi
    ldconfig -p 2>/dev/null | grep -F libsndfile >/dev/null || die "libsndfile still not found after apt-get"
}

versions() {  # versions VENV: one line with the versions that matter
    "$1/bin/python" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
parts = []
for name in ("mega-plugin", "torch", "transformers", "tokenizers", "fairseq2", "pluggy", "pytest"):
    try:
        parts.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        pass
print(", ".join(parts))
EOF
}

# Quick checks: run after installing, and on every run before trusting the stamp.
verify_hf() {
    "$VENVS/hf/bin/python" -c "import torch, transformers, tokenizers, pytest, onnx, onnxruntime, onnxscript, importlib.metadata as m
assert transformers.__version__.startswith('5.'), transformers.__version__
assert torch.__version__.startswith('${HF_TORCH#torch==}'), torch.__version__
m.distribution('mega-plugin')"
}

verify_fairseq2() {
    "$VENVS/fairseq2/bin/python" -c "import fairseq2, transformers, pytest, importlib.metadata as m
assert transformers.__version__.startswith('$FS2_TRANSFORMERS_PREFIX'), transformers.__version__
m.distribution('mega-plugin')"
}

bootstrap_hf() {
    local venv="$VENVS/hf" start=$SECONDS stamp
    stamp="$(stamp_of hf "$HF_TORCH" "${HF_EXTRA_PKGS[@]}")"
    ensure_venv hf
    if up_to_date hf "$stamp" verify_hf; then
        log "hf: up to date ($(versions "$venv"))"
        return 0
    fi
    rm -f "$venv/.mega-plugin-stamp"
    # torch first and pinned, so that nothing below can pull a CUDA build of torch.
    log "hf: pip install $HF_TORCH (CPU build)"
    "$venv/bin/pip" install "${PIP_FLAGS[@]}" "$HF_TORCH"
    log "hf: pip install -e .[hf,dev] ${HF_EXTRA_PKGS[*]}"
    "$venv/bin/pip" install "${PIP_FLAGS[@]}" "$HF_TORCH" -e ".[hf,dev]" "${HF_EXTRA_PKGS[@]}" "setuptools>=70.1"
    log "hf: verifying"
    verify_hf || die "hf: verification failed"
    echo "$stamp" > "$venv/.mega-plugin-stamp"
    log "hf: ready in $((SECONDS - start)) s ($(versions "$venv"))"
}

bootstrap_fairseq2() {
    local venv="$VENVS/fairseq2" start=$SECONDS stamp
    stamp="$(stamp_of fairseq2 "$FS2_PIN" "$FS2_TRANSFORMERS_PREFIX")"
    ensure_libsndfile
    ensure_venv fairseq2
    if up_to_date fairseq2 "$stamp" verify_fairseq2; then
        log "fairseq2: up to date ($(versions "$venv"))"
        return 0
    fi
    rm -f "$venv/.mega-plugin-stamp"
    log "fairseq2: pip install $FS2_PIN (brings torch 2.9.1 and transformers 4.57; large download)"
    "$venv/bin/pip" install "${PIP_FLAGS[@]}" "$FS2_PIN"
    log "fairseq2: pip install -e .[fairseq2,hf,dev]"
    "$venv/bin/pip" install "${PIP_FLAGS[@]}" "$FS2_PIN" -e ".[fairseq2,hf,dev]"
    # The test plugin packages build without isolation; python -m venv's setuptools is too old to.
    "$venv/bin/pip" install "${PIP_FLAGS[@]}" "setuptools>=70.1"
    log "fairseq2: verifying"
    verify_fairseq2 || die "fairseq2: verification failed"
    echo "$stamp" > "$venv/.mega-plugin-stamp"
    log "fairseq2: ready in $((SECONDS - start)) s ($(versions "$venv"))"
}

# The source distribution of the venv's transformers: its tests/ folder holds transformers' own
# common test mixins, which tests/hf/test_transformers_mixins.py runs against MEGA
# (tests/_support/transformers_sdist.py reads .venvs/sdists/transformers-<version>.tar.gz).
fetch_transformers_sdist() {  # fetch_transformers_sdist VENV
    local venv="$1" version
    version="$("$venv/bin/python" -c 'import transformers; print(transformers.__version__)')"
    mkdir -p "$VENVS/sdists"
    if [[ -f "$VENVS/sdists/transformers-$version.tar.gz" ]]; then
        return 0
    fi
    log "pip download --no-binary :all: --no-deps transformers==$version (its test mixins)"
    "$venv/bin/pip" download "${PIP_FLAGS[@]}" --no-binary :all: --no-deps -d "$VENVS/sdists" "transformers==$version" \
        || log "WARNING: no transformers $version sdist: the transformers mixin tests will skip"
}

total_start=$SECONDS
for env_name in "${wanted[@]}"; do
    case "$env_name" in
        hf) bootstrap_hf ;;
        fairseq2) bootstrap_fairseq2 ;;
    esac
    fetch_transformers_sdist "$VENVS/$env_name"
done
log "done in $((SECONDS - total_start)) s"
