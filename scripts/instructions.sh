#!/usr/bin/env bash
# Instructions per call of the hot paths (examples/instructions.rs), counted
# by callgrind: exact and repeatable for one binary, unlike times.
#
#   scripts/instructions.sh                 # every path
#   scripts/instructions.sh read/errmap_view build/bare_44
#
# Needs valgrind (Debian: apt-get install valgrind). CALLS (default 2000)
# sets how many calls each count is over.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    echo "valgrind is not installed (Debian: apt-get install valgrind)" >&2
    exit 2
fi
calls="${CALLS:-2000}"
cargo build --release --quiet --example instructions
bin=target/release/examples/instructions
"$bin" --check >/dev/null

declare -A anchor_of
mapfile -t listing < <("$bin")
all=()
for line in "${listing[@]}"; do
    read -r name anchor <<<"$line"
    all+=("$name")
    anchor_of[$name]="$anchor"
done
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=("${all[@]}")

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
declare -A per_call
count() {
    local name="$1" file="$out/${1//\//_}.out"
    valgrind --tool=callgrind --callgrind-out-file="$file" --collect-atstart=no \
        --toggle-collect='*instructions::measured*' "$bin" "$name" "$calls" 2>/dev/null
    local total
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$file")
    if [ -z "$total" ] || [ "$total" -eq 0 ]; then
        echo "callgrind counted nothing for $name" >&2
        exit 1
    fi
    per_call[$name]=$(( total / calls ))
}

printf '%-42s %14s  %s\n' "path" "instructions" "anchor"
for name in "${wanted[@]}"; do
    [ -n "${anchor_of[$name]+x}" ] || { echo "no path $name" >&2; exit 2; }
    count "$name"
    anchor="${anchor_of[$name]}"
    ratio=""
    if [ "$anchor" != "-" ]; then
        [ -n "${per_call[$anchor]+x}" ] || count "$anchor"
        ratio=$(awk -v a="${per_call[$anchor]}" -v p="${per_call[$name]}" -v n="$anchor" \
            'BEGIN { if (p <= a) printf "%s: %.2fx fewer", n, a / p;
                     else printf "%s: %.3fx as many (+%d)", n, p / a, p - a }')
    fi
    printf '%-42s %14d  %s\n' "$name" "${per_call[$name]}" "$ratio"
done
