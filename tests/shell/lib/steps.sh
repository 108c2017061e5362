# shellcheck shell=bash
# Sourced by the shell tests (not run by itself): TAP-like steps.
# Expects W (the test's temp dir, with W/steps) and PASSED, FAILED, SKIPPED, FAILED_STEPS.

# run_step NAME FUNCTION: runs FUNCTION in a subshell with errexit, so any
# failing command ends the step; prints ok/not ok and, on failure, the step's
# output as evidence. Steps share data through files in $W only. Exit 77 = skipped.
run_step() {
    local name=$1 fn=$2 out rc
    out="$W/steps/$((PASSED + FAILED + SKIPPED + 1)).out"
    set +e
    (
        set -eEuo pipefail
        trap 'echo "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
        "$fn"
    ) >"$out" 2>&1
    rc=$?
    set -e
    if ((rc == 0)); then
        echo "ok - $name"
        PASSED=$((PASSED + 1))
    elif ((rc == 77)); then
        echo "ok - $name # SKIP $(tail -n 1 "$out")"
        SKIPPED=$((SKIPPED + 1))
    else
        echo "not ok - $name"
        sed 's/^/#   /' "$out"
        FAILED=$((FAILED + 1))
        FAILED_STEPS+=("$name")
    fi
}

fail() { echo "$*"; exit 1; }   # ends the current step (we are in its subshell)
skip() { echo "$*"; exit 77; }

# finish_steps NAME: the plan line, the failed steps with the server log's tail (log_tail,
# when defined), the summary line `NAME: N passed, N failed, N skipped`; fails if a step did.
finish_steps() {
    echo "1..$((PASSED + FAILED + SKIPPED))"
    if ((FAILED > 0)); then
        printf '# failed: %s\n' "${FAILED_STEPS[@]}"
        if declare -F log_tail >/dev/null; then log_tail | sed 's/^/# /'; fi
    fi
    echo "$1: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    ((FAILED == 0))
}
