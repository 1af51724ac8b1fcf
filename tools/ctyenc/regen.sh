#!/bin/sh
# Regenerates the golden files from our specs with the real go-cty encoder:
#   crates/config/tests/golden/{task,driver}.spec.json   (from the Rust specs)
#   crates/config/tests/golden/*.msgpack                 (from each *.hcl body)
#   crates/nomad-plugin/tests/cty_golden/*.msgpack       (from each *.hcl with its *.spec.json)
# Needs: apt-get install -y golang-go golang-github-zclconf-go-cty-dev golang-github-hashicorp-hcl-v2-dev
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export GO111MODULE=off GOPATH=/usr/share/gocode

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd tools/ctyenc && go build -o "$tmp/ctyenc" .)

golden=crates/config/tests/golden
cargo run -q -p nomad-iis-config --example spec_json -- task >"$golden/task.spec.json"
cargo run -q -p nomad-iis-config --example spec_json -- driver >"$golden/driver.spec.json"

for hcl in "$golden"/*.hcl; do
	base=${hcl%.hcl}
	name=$(basename "$base")
	kind=${name%%_*}
	set -- -spec "$golden/$kind.spec.json" -config "$hcl" -out "$base.msgpack"
	if [ -f "$base.vars.json" ]; then
		set -- "$@" -vars "$base.vars.json"
	fi
	"$tmp/ctyenc" "$@"
	echo "wrote $base.msgpack"
done

cty=crates/nomad-plugin/tests/cty_golden
for hcl in "$cty"/*.hcl; do
	base=${hcl%.hcl}
	"$tmp/ctyenc" -spec "$base.spec.json" -config "$hcl" -out "$base.msgpack"
	echo "wrote $base.msgpack"
	if [ -f "$base.type" ]; then
		"$tmp/ctyenc" -spec "$base.spec.json" -config "$hcl" -type "$(cat "$base.type")" -out "$base.typed.msgpack"
		echo "wrote $base.typed.msgpack"
	fi
done
