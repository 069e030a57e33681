#!/usr/bin/env bash
# Runs every fuzz target of hcpsnap for a while each, one after the other,
# and stops at the first failure. `make test` runs it with a short time; run
# it with a longer one (./hack/fuzz.sh 10m) before a release or after
# changing a parser.
#
# Usage: hack/fuzz.sh [TIME]   TIME per target, as go test -fuzztime takes it
#                              (10s, 2m, 5000x); 10s by default.
#
# A failure leaves the failing input in <package>/testdata/fuzz/<target>/:
# commit it with the fix, so that `go test` replays it from then on.
set -euo pipefail

fuzztime="${1:-10s}"
cd "$(dirname "$0")/.."

# Package and target, one per line. go test -fuzz runs one target of one
# package at a time, so each is listed; add new ones here.
targets=(
	"./checkpoint FuzzDecode"
	"./internal/command FuzzRecordedRun"
	"./internal/etcdsnap FuzzScanner"
	"./management FuzzParseCalendar"
	"./manifest FuzzDecode"
	"./restore FuzzPatch"
	"./s3 FuzzParseURL"
)

# A target missing from the list would never run: refuse.
while IFS= read -r found; do
	listed=false
	for t in "${targets[@]}"; do
		if [[ "$t" == "$found" ]]; then listed=true; fi
	done
	if ! $listed; then
		echo "fuzz: $found is not listed in $0" >&2
		exit 1
	fi
done < <(grep -r --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*(' . |
	sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|' | sort -u)

for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz: $pkg $name for $fuzztime"
	# go's fuzz coordinator sometimes ends a clean run with "context deadline
	# exceeded" and no failing input (seen once in CI): run such a target once more.
	if ! out=$(go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg" 2>&1); then
		echo "$out"
		if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
			echo "fuzz: $pkg $name ended with the coordinator's deadline and no failing input: once more"
			go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg"
		else
			exit 1
		fi
	else
		echo "$out"
	fi
done
