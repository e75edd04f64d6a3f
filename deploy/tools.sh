# shellcheck shell=bash
# Sourced by deploy/validate.sh and k8s/validate.sh: the tools they need, or a clear stop.
#   need_pypi TOOL=PACKAGE ...  a TOOL (a command, or python3:MODULE) that is missing is
#     installed from PyPI, at the version deploy/tools-requirements.txt pins, into the
#     git-ignored venv .venv-tools/ at the repository's root.
#   need_debian TOOL=PACKAGE ...  a missing TOOL stops the script (exit 2), naming the
#     apt-get command that installs every missing one.
# .venv-tools/, once it exists, comes first on PATH (its python3 too), so every later run
# and `make k8s-validate`'s drift check find what it holds.

tools_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_venv=$tools_root/.venv-tools
tools_requirements=$tools_root/deploy/tools-requirements.txt
if [ -d "$tools_venv/bin" ]; then
  PATH="$tools_venv/bin:$PATH"
  export PATH
fi

# have TOOL: a command on PATH, or python3:MODULE importable by python3.
have() {
  case $1 in
    python3:*) python3 -c "import ${1#python3:}" > /dev/null 2>&1 ;;
    *) command -v "$1" > /dev/null ;;
  esac
}

need_debian() {
  local pair missing=() packages=()
  for pair in "$@"; do
    have "${pair%%=*}" || { missing+=("${pair%%=*}"); packages+=("${pair#*=}"); }
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}. Install with:" >&2
    echo "  sudo apt-get install ${packages[*]}" >&2
    exit 2
  fi
}

need_pypi() {
  local pair pin missing=() pins=()
  for pair in "$@"; do
    have "${pair%%=*}" || missing+=("${pair%%=*}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -x "$tools_venv/bin/python3" ]; then
    echo "-- creating .venv-tools/ for ${missing[*]}"
    python3 -m venv "$tools_venv" || {
      echo "python3 -m venv failed; install it with: sudo apt-get install python3-venv" >&2
      rm -rf "$tools_venv"
      exit 2
    }
  fi
  PATH="$tools_venv/bin:$PATH"
  export PATH
  hash -r
  # With the venv first on PATH (its python3 too), what is still missing goes into it.
  for pair in "$@"; do
    have "${pair%%=*}" && continue
    pin=$(grep -i -m1 -o "^${pair#*=}==[^ ]*" "$tools_requirements") \
      || { echo "${pair#*=} is not pinned in $tools_requirements" >&2; exit 2; }
    pins+=("$pin")
  done
  if [ ${#pins[@]} -gt 0 ]; then
    echo "-- installing ${pins[*]} into .venv-tools/ (pins: deploy/tools-requirements.txt)"
    "$tools_venv/bin/python3" -m pip install --quiet --disable-pip-version-check "${pins[@]}" || {
      echo "pip install ${pins[*]} into $tools_venv failed" >&2
      exit 2
    }
    hash -r
  fi
  for pair in "$@"; do
    have "${pair%%=*}" || { echo "${pair%%=*} still missing after installing ${pair#*=}" >&2; exit 2; }
  done
}

# kubectl is not taken from Debian: its kubernetes-client (1.20) lacks kustomize components.
need_kubectl() {
  command -v kubectl > /dev/null && return 0
  echo "missing: kubectl (1.27 or later, for its kustomize v5). Install it from" >&2
  echo "  https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/ (not Debian's kubernetes-client, 1.20)" >&2
  exit 2
}
