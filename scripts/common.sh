# Shared by scripts/demo and scripts/test (sourced, not run): the root check, the system
# packages the namespaces and tests need, and finding cargo when sudo dropped it from PATH.
# Debian and Ubuntu only (apt-get).

# The calling script's name, for its messages.
ROAM_SCRIPT="scripts/$(basename "$0")"

# Exits 2 with one line unless running as root. $1: what root is needed for.
roam_need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$ROAM_SCRIPT: needs root ($1); run: sudo $ROAM_SCRIPT" >&2
    exit 2
  fi
}

# Installs the Debian/Ubuntu packages providing the named commands that are missing.
# Arguments: command=package pairs; the package `jdk` stands for a JDK 17 (else the default JDK).
roam_install() {
  local need=() pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%=*}"
    pkg="${pair#*=}"
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$ROAM_SCRIPT: missing ${need[*]} and no apt-get here; install them and run again" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "== installing ${need[*]}"
  apt-get update -qq >/dev/null
  local i
  for i in "${!need[@]}"; do
    if [ "${need[$i]}" = jdk ]; then
      # The Android bridge's JVM test is written for JDK 17; newer releases only ship later ones.
      if apt-cache show openjdk-17-jdk-headless >/dev/null 2>&1; then
        need[$i]=openjdk-17-jdk-headless
      else
        need[$i]=default-jdk-headless
      fi
    fi
  done
  # dpkg's progress is noise here; failures still reach standard error.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# The packages for network namespaces: ip, nftables (silent blackholes), ethtool (the link
# emulator's veth offloads).
ROAM_NETNS_PACKAGES=(ip=iproute2 nft=nftables ethtool=ethtool)

# Puts cargo on PATH. Under sudo, PATH is usually reset and cargo lives in the invoking user's
# ~/.cargo/bin (rustup); the rustup proxy then needs that user's RUSTUP_HOME too.
roam_find_cargo() {
  if command -v cargo >/dev/null 2>&1; then
    return 0
  fi
  local home=""
  if [ -n "${SUDO_USER:-}" ]; then
    home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
  fi
  local dir
  for dir in "${CARGO_HOME:-}" "${home:+$home/.cargo}" "$HOME/.cargo"; do
    if [ -n "$dir" ] && [ -x "$dir/bin/cargo" ]; then
      export CARGO_HOME="$dir"
      export PATH="$dir/bin:$PATH"
      local rustup_home="${dir%/.cargo}/.rustup"
      if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$rustup_home" ]; then
        export RUSTUP_HOME="$rustup_home"
      fi
      return 0
    fi
  done
  echo "$ROAM_SCRIPT: cargo not found on PATH or in ~${SUDO_USER:-}/.cargo/bin; install Rust (https://rustup.rs) and run again" >&2
  exit 1
}

# Runs cargo with the given arguments as the user who called sudo, when the checkout is theirs,
# so target/ stays theirs; else as root.
roam_cargo_as_user() {
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] \
    && [ "$(stat -c %U .)" = "$SUDO_USER" ]; then
    sudo -u "$SUDO_USER" env PATH="$PATH" HOME="$(getent passwd "$SUDO_USER" | cut -d: -f6)" \
      ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} \
      cargo "$@"
  else
    cargo "$@"
  fi
}
