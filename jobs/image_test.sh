#!/usr/bin/env bash
# `make image-test`: build the trainer image with podman and run it the way the Kubernetes manifests do
# (tests/launch/test_image.py). On a fresh Debian machine, as root, it first installs what it needs with apt.
#
#   jobs/image_test.sh                 # set up (once), then pytest -m image tests/launch/test_image.py
#   jobs/image_test.sh -k resume       # extra arguments go to pytest
#   jobs/image_test.sh --setup-only    # steps 1-3 only (tests/launch/test_image.py calls this when podman or the base
#                                      # images are missing, so that `make test` sets up a fresh machine too)
#
# Steps, each skipped when already done (so the second run only builds what changed and runs the tests):
#   1. apt-get install podman, runc, mmdebstrap, netavark (+ aardvark-dns, iptables, uidmap, slirp4netns,
#      fuse-overlayfs, catatonit), with one `apt-get update`, if podman, runc or mmdebstrap is missing.
#   2. /etc/containers/containers.conf.d/50-fmnist-image-test.conf: the runc runtime (crun fails on cgroup v1
#      hosts like this one), `default_ulimits = []` (else "error setting rlimit ... operation not permitted") and
#      the netavark network backend.
#   3. The Dockerfile's base images: when `tensorflow/tensorflow:<pin>` or `...-gpu` is not present and cannot
#      be pulled (no container registry is reachable here), a stand-in made with mmdebstrap: Debian bookworm with
#      python3, python3-pip, python3-venv, passwd and ca-certificates, without Debian's EXTERNALLY-MANAGED marker,
#      imported once and tagged with the missing FROM names (labelled fmnist.standin=<recipe hash>; rebuilt only
#      when the recipe below changes). A real base already present is never replaced.
#   4. pytest: a session fixture runs `podman build --pull=never --target cpu` (podman's layer cache makes it a
#      no-op when nothing changed) and `--target gpu`, then the tests run containers.
#
# Environment (all optional):
#   PYTHON           the Python that runs pytest (default .venv/bin/python; `make image-test` sets up .venv)
#   STANDIN=0        never build a stand-in (fail if the base images are missing)
#   APT=0            never run apt-get (fail if a tool is missing)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-$root/.venv/bin/python}"
setup_only=0
if [[ "${1-}" == --setup-only ]]; then
  setup_only=1
  shift
fi

say() { printf 'image-test: %s\n' "$*" >&2; }
stamp() { date +%s; }
t0=$(stamp)

# ------------------------------------------------------------------------------------------ 1. packages
missing=()
for tool in podman runc mmdebstrap; do
  command -v "$tool" > /dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  if [[ "${APT:-1}" == 0 || "$(id -u)" != 0 ]]; then
    say "missing ${missing[*]}: install them (apt-get install podman runc mmdebstrap netavark aardvark-dns) or run as root"
    exit 1
  fi
  say "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman runc mmdebstrap netavark aardvark-dns iptables \
    uidmap slirp4netns fuse-overlayfs catatonit > /dev/null
  say "packages installed in $(($(stamp) - t0)) s"
fi

# ------------------------------------------------------------------------------------- 2. podman config
conf_dir=/etc/containers/containers.conf.d
conf="$conf_dir/50-fmnist-image-test.conf"
wanted='# Written by fmnist-trainer jobs/image_test.sh: runc (crun fails on this cgroup v1 host); no default ulimits
# (setting them fails with "operation not permitted" in this kind of VM); netavark, not the CNI plugins (not installed).
[containers]
default_ulimits = []

[engine]
runtime = "runc"

[network]
network_backend = "netavark"'
if [[ "$(id -u)" == 0 && "$(cat "$conf" 2> /dev/null)" != "$wanted" ]]; then
  mkdir -p "$conf_dir"
  printf '%s\n' "$wanted" > "$conf"
  say "wrote $conf"
fi
if ! podman info > /dev/null 2>&1; then
  say "podman cannot run here:"
  podman info 2>&1 | tail -5 >&2
  exit 1
fi

# ---------------------------------------------------------------------------------- 3. the base images
tf_version="$(sed -n 's/^tensorflow==//p' requirements.txt)"
bases=("tensorflow/tensorflow:$tf_version" "tensorflow/tensorflow:$tf_version-gpu")
packages=python3,python3-pip,python3-venv,passwd,ca-certificates
recipe="mmdebstrap --variant=apt bookworm include=$packages minus EXTERNALLY-MANAGED v1"
recipe_hash="$(printf '%s' "$recipe" | sha256sum | cut -c1-16)"

standin_of() {  # the fmnist.standin label of an image ("" when absent or not a stand-in)
  podman image inspect --format '{{ index .Labels "fmnist.standin" }}' "$1" 2> /dev/null || true
}

is_standin() {  # 0 when the image is one of our stand-ins (of any recipe)
  local label
  label="$(standin_of "$1")"
  [[ -n "$label" && "$label" != "<no value>" ]]
}

missing=()   # base names that need the stand-in: absent and not pullable, or an outdated stand-in
current=""   # an up-to-date stand-in already here
for base in "${bases[@]}"; do
  if podman image exists "$base"; then
    if [[ "$(standin_of "$base")" == "$recipe_hash" ]]; then
      current="$(podman image inspect --format '{{.Id}}' "$base")"
    elif is_standin "$base"; then
      missing+=("$base")
    fi
  elif podman pull --quiet "docker.io/$base" > /dev/null 2>&1; then
    say "pulled the real base $base"
  else
    missing+=("$base")
  fi
done
if ((${#missing[@]})); then
  if [[ "${STANDIN:-1}" == 0 ]]; then
    say "the base images ${missing[*]} are missing, cannot be pulled, and STANDIN=0"
    exit 1
  fi
  t1=$(stamp)
  if [[ -n "$current" ]]; then
    image_id="$current"
  else
    say "no registry: building a stand-in base (Debian bookworm + $packages) with mmdebstrap"
    tarball="$(mktemp --suffix=.tar)"
    trap 'rm -f "$tarball"' EXIT
    # shellcheck disable=SC2016  # "$1" (the new root) is expanded by mmdebstrap's hook shell, not here
    mmdebstrap --quiet --variant=apt --include="$packages" \
      --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "$tarball" > /dev/null
    image_id="$(podman import --quiet \
      --change 'CMD ["python3"]' --change "LABEL fmnist.standin=$recipe_hash" \
      --message "fmnist-trainer stand-in for ${bases[*]}: $recipe" "$tarball")"
    rm -f "$tarball"
  fi
  image_id="${image_id#sha256:}"
  for base in "${missing[@]}"; do
    podman tag "$image_id" "docker.io/$base"   # the name the FROM line's short name stands for
  done
  say "stand-in ${image_id:0:12} tagged ${missing[*]} in $(($(stamp) - t1)) s"
fi

# ------------------------------------------------------------------------------------------ 4. the tests
if ((setup_only)); then
  say "setup done in $(($(stamp) - t0)) s"
  exit 0
fi
if [[ ! -x "$python" ]]; then
  say "$python is missing: run make setup first (or set PYTHON)"
  exit 1
fi
say "setup done in $(($(stamp) - t0)) s; running tests/launch/test_image.py"
status=0
"$python" -m pytest -m image tests/launch/test_image.py "$@" || status=$?
# Images no tag points to any more (e.g. the dependency layer before requirements.txt changed): 2.5 GB each.
podman image prune --force > /dev/null 2>&1 || true
podman images --filter reference=fmnist-trainer --format 'image-test: {{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' >&2 || true
say "finished in $(($(stamp) - t0)) s (status $status)"
exit "$status"
