#!/usr/bin/env bash
# A copy of templates/ with some of the kernels' compile-time defaults changed, for an A/B of a
# kernel-text experiment that has no knob (tools/gpu/ab-templates.sh takes the folder as its A
# side; ATTNJIT_TEMPLATE_DIR=FOLDER runs the GPU tests on it):
#   tools/gpu/template-variant.sh /tmp/traced AJ_TRACE=1
# Each NAME=VALUE rewrites the line `#define NAME <old>` that follows `#ifndef NAME` in every
# template; a name found nowhere is an error (a typo would otherwise A/B two equal kernels).
# FOLDER is replaced only if this script made it (a marker file says so).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,8p' "$0"
  exit 2
fi
out=$1
shift
here=$(cd "$(dirname "$0")/../.." && pwd)
# Only a folder this script made (its marker file) is replaced: never anything else by mistake.
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] && [ ! -f "$out/.template-variant" ]; then
  echo "$out exists and is not a folder this script made; give a new path" >&2
  exit 2
fi
rm -rf "$out"
mkdir -p "$out"
cp -r "$here/templates/." "$out/"
touch "$out/.template-variant"
for setting in "$@"; do
  name=${setting%%=*} value=${setting#*=}
  [[ "$name" =~ ^[A-Z_][A-Z0-9_]*$ && "$setting" == *=* ]] || { echo "not NAME=VALUE: $setting" >&2; exit 2; }
  changed=0
  while IFS= read -r file; do
    perl -0pi -e "s/(#ifndef $name\n#define $name )[^\n]*/\${1}$value/g" "$file"
    changed=1
  done < <(grep -rlZ --null-data -e "#ifndef $name" "$out" | tr '\0' '\n')
  [ "$changed" = 1 ] || { echo "no template defines a default for $name" >&2; exit 1; }
  grep -rh "^#define $name " "$out" | sed "s|^|$out: |"
done
