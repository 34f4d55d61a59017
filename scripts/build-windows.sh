#!/usr/bin/env bash
# Builds the Windows side of heapledger on Linux: heapledger.dll (the src/ crate, hooks in src/windows/) and
# heapledger.exe (the CLI, whose `run` injects the DLL), cross-compiled for x86_64-pc-windows-gnu with
# mingw-w64, and leaves both in target/x86_64-pc-windows-gnu/release/. The tests in tests/windows.rs run them
# under Wine.
#
# Idempotent and quiet: the first run installs Debian's wine/mingw/rustc-web packages, makes a headless Wine
# prefix (~/.wine-heapledger, or $WINEPREFIX) and builds std from source (-Z build-std: there is no prebuilt
# Windows std for this toolchain), a few minutes in all; later runs only rebuild what changed.
#
# Why Debian's rustc-web and not rustup's toolchain: rustup cannot download the Windows target here, and
# rust-web-src ships the std sources build-std needs. Why a separate target dir: the two toolchains must not
# share host build-script artifacts in target/release.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/target/win-build"
out="$root/target/x86_64-pc-windows-gnu/release"
mkdir -p "$build" "$out"

log() { echo "build-windows: $*" >&2; }

# ---- 1. packages --------------------------------------------------------------------------------------------
pkgs=(wine64 wine gcc-mingw-w64-x86-64 rustc-web cargo-web rust-web-src)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- 2. toolchain and Wine environment (as ../shared/windows/env.sh) ------------------------------------------
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export WINEPREFIX="${WINEPREFIX:-$HOME/.wine-heapledger}" WINEARCH=win64 WINEDEBUG="${WINEDEBUG:--all}"
unset DISPLAY
config="$build/cargo-config.toml"
cat >"$config.new" <<'EOF'
# Written by scripts/build-windows.sh: cross-compile with mingw-w64, building std from source.
[build]
target = "x86_64-pc-windows-gnu"

[unstable]
build-std = ["std", "panic_abort"]

[target.x86_64-pc-windows-gnu]
linker = "x86_64-w64-mingw32-gcc"
runner = "wine"
EOF
cmp -s "$config.new" "$config" && rm "$config.new" || mv "$config.new" "$config"

# ---- 3. Wine prefix with the bcryptprimitives stub ------------------------------------------------------------
# Wine 8 lacks bcryptprimitives.dll; every Rust std >= 1.78 binary imports ProcessPrng from it and, without
# it, dies at load with exit code 53 and no message.
sys32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -d "$sys32" ]; then
    log "creating Wine prefix $WINEPREFIX"
    wineboot --init >/dev/null 2>&1 || true
    wineserver -w
fi
if [ ! -f "$sys32/bcryptprimitives.dll" ]; then
    cat >"$build/bcryptprimitives.c" <<'EOF'
#include <windows.h>
#include <bcrypt.h>
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
        data += chunk; len -= chunk;
    }
    return TRUE;
}
EOF
    printf 'LIBRARY bcryptprimitives.dll\nEXPORTS\n    ProcessPrng\n' >"$build/bcryptprimitives.def"
    x86_64-w64-mingw32-gcc -O2 -shared -o "$sys32/bcryptprimitives.dll" \
        "$build/bcryptprimitives.c" "$build/bcryptprimitives.def" -lbcrypt
fi

# ---- 4. the DLL -----------------------------------------------------------------------------------------------
cargo_win() {
    CARGO_TARGET_DIR="$build" /usr/bin/cargo --config "$config" "$@"
}
cd "$root"
cargo_win build --release --quiet -p heapledger-preload

# ---- 5. the CLI -------------------------------------------------------------------------------------------------
# On Windows, tracer-cli/src/windows.rs is the `run` module (main.rs: `#[cfg(windows)] #[path = "windows.rs"]
# mod run;`). Until main.rs has that, the CLI is built from a copy with the two lines added.
cli_manifest="$root/tracer-cli/Cargo.toml"
if ! grep -q 'path = "windows.rs"' "$root/tracer-cli/src/main.rs"; then
    copy="$build/cli-src"
    mkdir -p "$copy"
    # Modification times are kept, so an unchanged source does not rebuild.
    rm -rf "$copy/src.new" && cp -a "$root/tracer-cli/src" "$copy/src.new" && rm -rf "$copy/src" && mv "$copy/src.new" "$copy/src"
    sed 's/^mod run;$/#[cfg(unix)]\nmod run;\n#[cfg(windows)]\n#[path = "windows.rs"]\nmod run;/' \
        "$root/tracer-cli/src/main.rs" >"$copy/main.rs.new"
    cmp -s "$copy/main.rs.new" "$copy/main.rs.last" || cp "$copy/main.rs.new" "$copy/main.rs.last"
    cp -p "$copy/main.rs.last" "$copy/src/main.rs"
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
    sed -e 's/^edition.workspace = true/edition = "2021"/' \
        -e 's/^license.workspace = true/license = "MIT OR Apache-2.0"/' \
        -e "s/^version.workspace = true/version = \"$version\"/" \
        -e "s#path = \"../format\"#path = \"$root/format\"#" \
        "$root/tracer-cli/Cargo.toml" >"$copy/Cargo.toml.new"
    printf '\n[workspace]\n' >>"$copy/Cargo.toml.new"
    cmp -s "$copy/Cargo.toml.new" "$copy/Cargo.toml" && rm "$copy/Cargo.toml.new" || mv "$copy/Cargo.toml.new" "$copy/Cargo.toml"
    [ -f "$copy/Cargo.lock" ] || cp "$root/Cargo.lock" "$copy/Cargo.lock"
    cli_manifest="$copy/Cargo.toml"
    cargo_win build --release --quiet --manifest-path "$cli_manifest" --bin heapledger
else
    cargo_win build --release --quiet -p heapledger-cli --bin heapledger
fi

# ---- 6. results -------------------------------------------------------------------------------------------------
for f in heapledger.dll heapledger.exe; do
    src="$build/x86_64-pc-windows-gnu/release/$f"
    cmp -s "$src" "$out/$f" || cp "$src" "$out/$f"
done
log "ok: $out/heapledger.dll, $out/heapledger.exe"
