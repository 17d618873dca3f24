#!/usr/bin/env bash
# The test command of mega-plugin: builds/updates both environments, then runs pytest
# in each. Extra arguments go to both pytest runs, e.g.
#   bash scripts/test.sh -x -k ema
#   bash scripts/test.sh tests/core
# Exit status: non-zero if either run fails. "No tests collected" (pytest exit code 5)
# counts as a failure only when it happens in both environments.
# Last line of output: "N passed, M failed" over both runs (errors count as failed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENVS="$ROOT/.venvs"

bash scripts/bootstrap_envs.sh

export FAIRSEQ2_EXTENSION_TRACE=1   # a failing fairseq2 extension raises instead of logging
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # tests never download

REPORTS="$(mktemp -d)"
trap 'rm -rf "$REPORTS"' EXIT

# run_pytest ENV ARGS...: pytest in .venvs/ENV with a JUnit report; returns its exit code.
run_pytest() {
    local env_name="$1"
    shift
    printf '\n===== pytest in the %s environment (%s) =====\n' "$env_name" "$VENVS/$env_name"
    MEGA_PLUGIN_ENV="$env_name" "$VENVS/$env_name/bin/pytest" -p no:cacheprovider \
        --junitxml="$REPORTS/$env_name.xml" "$@"
}

start=$SECONDS
rc_hf=0
run_pytest hf "$@" || rc_hf=$?
rc_fs2=0
run_pytest fairseq2 "$@" || rc_fs2=$?

printf '\n===== summary =====\n'
echo "hf: pytest exit code $rc_hf; fairseq2: pytest exit code $rc_fs2; $((SECONDS - start)) s of testing"

status=0
if [ "$rc_hf" = 5 ] && [ "$rc_fs2" = 5 ]; then
    echo "no tests were collected in either environment"
    status=5
else
    for rc in "$rc_hf" "$rc_fs2"; do
        if [ "$rc" != 0 ] && [ "$rc" != 5 ] && [ "$status" = 0 ]; then
            status=$rc
        fi
    done
fi

# Count the results of both runs from the JUnit XML reports (stdlib only).
python3 - "$REPORTS" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

passed = failed = 0
for env_name in ("hf", "fairseq2"):
    report = Path(sys.argv[1]) / f"{env_name}.xml"
    if not report.is_file():
        print(f"note: no JUnit report from the {env_name} run (pytest did not get to write one)")
        continue
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for suite in suites:
        tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        passed += tests - skipped - bad
        failed += bad
print(f"{passed} passed, {failed} failed")
EOF
exit "$status"
