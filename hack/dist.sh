#!/usr/bin/env bash
# make dist: versioned release archives of kubectl-rewire, their checksums and
# the krew plugin manifest, validated with krew's own tools.
#
#   dist/kubectl-rewire_<version>_<os>_<arch>.tar.gz   kubectl-rewire + LICENSE
#   dist/checksums.txt                                  sha256sum format
#   dist/plugins/rewire.yaml                            krew manifest (deploy/krew/rewire.yaml.tmpl)
#
# VERSION           release version, vMAJOR.MINOR.PATCH[-PRE] (krew needs semver);
#                   default: the exact v* tag of HEAD, else v0.0.0-g<commit>[-dirty]
# DIST_URI_BASE     where the archives will be downloadable from (default: the
#                   GitHub release of VERSION)
# DIST_PLATFORMS    default: linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
# DIST_DIR          default: dist
# DIST_SKIP_CHECK=1 skip the krew validation (tools/krewcheck)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=/usr/local/go/bin:$PATH

semver='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$'
if [ -n "${VERSION:-}" ]; then
  [[ $VERSION =~ $semver ]] || { echo "dist: VERSION=$VERSION is not vMAJOR.MINOR.PATCH[-PRE] (krew needs semver)" >&2; exit 1; }
elif tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null) && [[ $tag =~ $semver ]]; then
  VERSION=$tag
else
  commit=$(git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
  dirty=$(git diff --quiet HEAD 2>/dev/null || echo -dirty)
  VERSION=v0.0.0-g$commit$dirty
fi
uri_base=${DIST_URI_BASE:-https://github.com/rewire-cni/rewire/releases/download/$VERSION}
uri_base=${uri_base%/}
platforms=${DIST_PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}
out=${DIST_DIR:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Reproducible archives: fixed mtime (the commit's), owner and order.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

for p in $platforms; do
  grep -qx "# BEGIN $p" deploy/krew/rewire.yaml.tmpl ||
    { echo "dist: deploy/krew/rewire.yaml.tmpl has no platform $p" >&2; exit 1; }
done
rm -rf "$out/plugins" "$out"/kubectl-rewire_*.tar.gz "$out/checksums.txt"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
echo "dist: kubectl-rewire $VERSION for $platforms" >&2
for p in $platforms; do
  os=${p%/*} arch=${p#*/}
  name=kubectl-rewire_${VERSION}_${os}_${arch}
  mkdir -p "$stage/$name"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath \
    -ldflags "-s -w -X github.com/rewire-cni/rewire/pkg/version.Version=$VERSION" \
    -o "$stage/$name/kubectl-rewire" ./cmd/kubectl-rewire
  install -m 0644 LICENSE "$stage/$name/LICENSE"
  tar -C "$stage/$name" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    -cf - kubectl-rewire LICENSE | gzip -n -9 >"$out/$name.tar.gz"
done
(cd "$out" && sha256sum kubectl-rewire_*.tar.gz >checksums.txt)

# The manifest: the template with this release's values; platforms not
# built are dropped.
mkdir -p "$out/plugins"
script=(-e "s|@VERSION@|$VERSION|g" -e "s|@URI_BASE@|${uri_base//&/\\&}|g")
for p in $(sed -n 's|^# BEGIN ||p' deploy/krew/rewire.yaml.tmpl); do
  os=${p%/*} arch=${p#*/}
  archive="$out/kubectl-rewire_${VERSION}_${os}_${arch}.tar.gz"
  if [ -f "$archive" ]; then
    sum=$(sha256sum "$archive" | cut -d' ' -f1)
    script+=(-e "s|@SHA256_${os}_${arch}@|$sum|g")
  else
    script+=(-e "\\|^# BEGIN $p\$|,\\|^# END $p\$|d")
  fi
done
sed "${script[@]}" deploy/krew/rewire.yaml.tmpl | sed '/^#/d' >"$out/plugins/rewire.yaml"
if grep -n '@[A-Z0-9_]*@' "$out/plugins/rewire.yaml" >&2; then
  echo "dist: placeholders left in the manifest" >&2; exit 1
fi

if [ "${DIST_SKIP_CHECK:-}" != 1 ]; then
  echo "dist: validating the manifest with krew (tools/krewcheck)" >&2
  (cd tools/krewcheck && REWIRE_DIST_DIR="$out" go test -count=1 .)
fi
(cd "$out" && ls -l kubectl-rewire_*.tar.gz checksums.txt plugins/rewire.yaml)
