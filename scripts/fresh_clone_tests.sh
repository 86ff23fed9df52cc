#!/usr/bin/env bash
# The README's test command in N fresh clones and fresh virtual environments in a row, as
# a new user runs it (issue 23): prints one line per run and a closing count.
#   scripts/fresh_clone_tests.sh [N=20] [REPO=this checkout's committed HEAD]
# Each run: git clone, python3 -m venv, then the README's second command verbatim (read
# from README.md by .ci/readme_command), with ../shared beside the clone when this
# checkout has it. Nothing is shared between runs but pip's and torch's on-disk caches
# (the compiled kernels are keyed by source, flags, CPU and torch version).
set -uo pipefail
n="${1:-20}"
repo="$(cd "${2:-$(dirname "$0")/..}" && pwd)"
work="$(mktemp -d)"
shared="$(cd "$repo/.." && pwd)/shared"
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
for i in $(seq 1 "$n"); do
  run="$work/run$i"
  mkdir -p "$run"
  [ -d "$shared" ] && ln -s "$shared" "$run/shared"
  git clone -q "$repo" "$run/rnnkit"
  start=$SECONDS
  (
    cd "$run/rnnkit" || exit 1
    python3 -m venv .venv && . .venv/bin/activate || exit 1
    bash -c "$(.ci/readme_command 2)"
  ) >"$run/log" 2>&1
  status=$?
  summary="$(grep -E '[0-9]+ (passed|failed)' "$run/log" | tail -1)"
  commit="$(git -C "$run/rnnkit" rev-parse --short HEAD)"
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1)) verdict=ok
  else
    failed=$((failed + 1)) verdict=FAILED
    cp "$run/log" "$repo/fresh_clone_run$i.log" 2>/dev/null || true
  fi
  echo "run $i/$n: $verdict (exit $status) at $commit in $((SECONDS - start)) s: $summary"
  rm -rf "$run"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
