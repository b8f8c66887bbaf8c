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

# The Python environment handover-bench's stock QUIC peer runs in when the python3 on PATH has
# no aioquic (tests/src/system/stock.rs, PEER_VENV, reads the same path).
ROAM_PEER_VENV=/var/cache/roam-tests/venv

# What handover-bench's stock peers need (tests/README.md, "Stock peers"): socat and mptcpize
# (Debian packages) for the MPTCP peer, aioquic 1.7.2 for the QUIC peer, in ROAM_PEER_VENV
# unless python3 already has it. Idempotent and quiet; a failure leaves the stock rows to say
# what is missing rather than failing the caller.
roam_install_stock_peers() {
  # A subshell: roam_install exits on a machine without apt-get, which must not end the caller.
  (roam_install socat=socat mptcpize=mptcpize python3=python3) \
    || echo "$ROAM_SCRIPT: socat or mptcpize missing; handover-bench's stock MPTCP peer will say so" >&2
  if python3 -c 'import aioquic' >/dev/null 2>&1 \
    || "$ROAM_PEER_VENV/bin/python3" -c 'import aioquic' >/dev/null 2>&1; then
    return 0
  fi
  echo "== installing aioquic into $ROAM_PEER_VENV"
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  { mkdir -p "$(dirname "$ROAM_PEER_VENV")" \
    && python3 -m venv "$ROAM_PEER_VENV" \
    && "$ROAM_PEER_VENV/bin/pip" install -q --disable-pip-version-check aioquic==1.7.2; } \
    || echo "$ROAM_SCRIPT: could not install aioquic; handover-bench's stock QUIC peer will say so" >&2
}
