#!/usr/bin/env bash
# The main job of mega-plugin in one command: build (or reuse) the Hugging Face environment, then
# run `mega-plugin demo` on its embedded default. Extra arguments go to the demo, e.g.
#   bash scripts/demo.sh --text "Any sentence you like." --output-dir /tmp/mega-demo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap_envs.sh hf >&2
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # the demo never downloads
exec "$ROOT/.venvs/hf/bin/mega-plugin" demo "$@"
