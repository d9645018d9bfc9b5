#!/usr/bin/env bash
# The test suite, as CI runs it (.ci/run calls exactly this). Each environment is a venv that this script
# creates and installs itself (torch==2.13.0 first, so that pip never replaces it with a CUDA build):
#
#   core     .venv-core     pip install -e ".[plot,tensorboard,lightning,datasets,test]" at the newest releases
#                           pip resolves, as a user's plain install (huggingface-hub >= 2, the newest transformers);
#                           runs every test not marked `engine`; then, in the test files that name an optional
#                           package, the tests not marked slow again with the optional packages and the engines
#                           hidden (GROKMON_TEST_HIDE): each test that needs one must skip with its install line.
#   engines  .venv-engines  the same extras plus `engines` (DeepSpeed, torchtitan, Megatron-core, OLMo-core, with
#                           the caps they put on huggingface-hub, transformers, rich, filelock, fsspec);
#                           runs the tests marked `engine`. Its caps never reach .venv-core.
#
# In each environment a skip fails (GROKMON_TEST_ENV; a CUDA or Chromium skip excepted: CI has neither GPU
# nor, where it cannot be installed, Chromium), so that every test runs in one of them; "no tests ran"
# fails; the 25 slowest tests are listed; the repository tree must be as clean after the tests as before.
#
#   bash scripts/test.sh                     # both environments, every test (what CI runs)
#   bash scripts/test.sh core                # one environment
#   bash scripts/test.sh core -x -k probe    # pytest options after the environment names
#   QUICK=1 bash scripts/test.sh core        # without the tests marked slow
#
# A venv that exists is reused; it is installed again only when pyproject.toml changed. Remove it
# (rm -rf .venv-core) to get the newest releases again.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
CORE_EXTRAS="plot,tensorboard,lightning,datasets,test"
HIDE="tensorboard,lightning,matplotlib,datasets,scipy"   # the optional packages the core tests use
ENGINES="deepspeed,torchtitan,megatron,olmo_core"
# A test file that names one of these (a package, or a grokmon API that imports one) is run with them hidden.
OPTIONAL_NAMES='tensorboard|TensorBoard|lightning|matplotlib|plot_|write_report|datasets|scipy|need\(|importorskip|olmo_core|deepspeed|torchtitan|megatron'

envs=()
while [ $# -gt 0 ] && { [ "$1" = core ] || [ "$1" = engines ]; }; do envs+=("$1"); shift; done
[ ${#envs[@]} -eq 0 ] && envs=(core engines)
PYTEST_ARGS=("$@")
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
failed=()
summary=()
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime; }
echo "== scripts/test.sh: ${envs[*]} on $(nproc 2>/dev/null || echo '?') CPU cores, load average $(load)"

# Files and folders that are there now, tracked or not, ignored or not, without venvs and tool caches.
tree_state() {
  git -C "$ROOT" status --porcelain --ignored --untracked-files=normal 2>/dev/null \
    | grep -vE '[ /"](\.venv[^/]*|__pycache__|\.pytest_cache|\.hypothesis|[^/]*\.egg-info)(/|$)' | sort
}

install() {  # install ENV EXTRAS: create .venv-ENV if it is missing, install torch, then grokmon with EXTRAS
  local venv="$ROOT/.venv-$1" start=$SECONDS
  echo "== $1: installing into $venv (pip install -e \".[$2]\")"
  if [ ! -x "$venv/bin/python" ]; then "$PYTHON" -m venv "$venv" || return 1; fi
  # an editable install: code changes need no reinstall, a changed pyproject.toml does
  local stamp="$venv/.scripts-test-installed" want
  want="$(sha256sum pyproject.toml | cut -c1-64) $TORCH $2"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "    installed already for this pyproject.toml (remove $venv to reinstall)"
  else
    rm -f "$stamp"
    "$venv/bin/python" -m pip install -q "$TORCH" && "$venv/bin/python" -m pip install -q -e ".[$2]" || return 1
    echo "$want" > "$stamp"
  fi
  "$venv/bin/python" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
names = ["torch", "transformers", "huggingface-hub", "accelerate", "wandb", "datasets", "triton", "deepspeed",
         "torchtitan", "megatron-core", "ai2-olmo-core"]
found = []
for name in names:
    try:
        found.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        found.append(f"{name} -")
print("   ", ", ".join(found))
EOF
  summary+=("$(printf '%-8s install %4d s' "$1" $((SECONDS - start)))")
}

# Run the tests MARKERS selects (in FILEs, else all); the result line goes to the summary, a failure to $failed.
run_pytest() {  # run_pytest NAME VENV MARKERS [ENV=VALUE...] [-- FILE...]
  local name=$1 venv="$ROOT/.venv-$2" markers=$3 start=$SECONDS rc
  shift 3
  local assignments=() files=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do assignments+=("$1"); shift; done
  [ $# -gt 0 ] && shift && files=("$@")
  [ -n "${QUICK:-}" ] && markers="($markers) and not slow"
  echo "== $name: pytest -m \"$markers\" ${assignments[*]} ${files[*]}"
  env ${assignments[@]+"${assignments[@]}"} PATH="$venv/bin:$PATH" HF_HUB_OFFLINE=1 WANDB_MODE=offline \
    "$venv/bin/python" -m pytest -q --durations=25 -m "$markers" ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"} \
    ${files[@]+"${files[@]}"} 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  local result
  result=$(grep -E '^=*.*(passed|failed|skipped|error|no tests ran).* in [0-9.]+s' "$LOGS/$name.log" | tail -1 | tr -d '=')
  summary+=("$(printf '%-8s tests %6d s  %s' "$name" $((SECONDS - start)) "${result:-no result line}")")
  if [ "$rc" -eq 5 ]; then
    echo "== $name: no tests ran (pytest exit code 5): the selection is empty" >&2
    failed+=("$name: no tests ran")
  elif [ "$rc" -ne 0 ]; then
    failed+=("$name: pytest exit code $rc")
  fi
}

before=$(tree_state)
for e in "${envs[@]}"; do
  case $e in
    core)
      if install core "$CORE_EXTRAS"; then
        if "$ROOT/.venv-core/bin/python" -m pip show -q deepspeed torchtitan megatron-core ai2-olmo-core >/dev/null 2>&1; then
          failed+=("core: an engine is installed in .venv-core (its caps would change what core tests)")
        fi
        run_pytest core core "not engine" GROKMON_TEST_ENV=core
        # the files that name an optional package or an API that needs one, again with those packages
        # hidden (the engines too): what needs one must skip with its install line
        mapfile -t optional_files < <(grep -lE "$OPTIONAL_NAMES" tests/test_*.py)
        # the error catalogue's cases live in tests/catalogue/: run its test file when any case names one
        if grep -qlE "$OPTIONAL_NAMES" tests/catalogue/*.py && [[ ! " ${optional_files[*]} " =~ " tests/test_error_catalogue.py " ]]; then
          optional_files+=(tests/test_error_catalogue.py)
        fi
        run_pytest core-hide core "not slow" GROKMON_TEST_HIDE="$HIDE,$ENGINES" -- "${optional_files[@]}"
      else
        failed+=("core: install failed")
      fi
      ;;
    engines)
      if install engines "$CORE_EXTRAS,engines"; then
        run_pytest engines engines "engine" GROKMON_TEST_ENV=engines
      else
        failed+=("engines: install failed")
      fi
      ;;
  esac
done

new=$(comm -13 <(echo "$before") <(tree_state))
if [ -n "$new" ]; then
  echo "== the tests left files in the repository (write under tmp_path instead):" >&2
  echo "$new" >&2
  failed+=("files left in the repository: $(echo "$new" | wc -l)")
fi

echo
echo "== summary: ${envs[*]}, ${SECONDS} s in all, load average now $(load)"
printf '   %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  printf '== FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "== all passed"
