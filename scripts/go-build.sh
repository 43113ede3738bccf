# Sourced by scripts/kube-build and scripts/helm-build: a Go build from the Go module proxy, cached outside the checkout.
#   go_build_cached TOOL NAME VERSION MINUTES LDFLAGS COMMANDS PACKAGES...
# builds PACKAGES (in the current folder's module, read-only, CGO off, trimmed) with LDFLAGS into
# $KUBE_CACHE_DIR/NAME-VERSION-KEY (default cache ${XDG_CACHE_HOME:-$HOME/.cache}/service-announcer), where KEY hashes
# go.mod, go.sum, tools.go, the calling script (GO_BUILD_CALLER) and this file, unless every one of COMMANDS (space-separated) is
# there already. A built binary named "server" is renamed to the first of COMMANDS (etcd's main package builds one).
# Prints the folder on stdout; progress every 15 s on stderr, prefixed with TOOL. Builds of other keys unused for a
# week are deleted (another checkout may still use a recent one: never those).
go_build_cached() {
    local tool=$1 name=$2 version=$3 minutes=$4 ldflags=$5 commands=$6
    shift 6
    local key cache out complete=true command go staging builder started
    key=$(cat go.mod go.sum tools.go "${GO_BUILD_CALLER:?}" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
    cache=${KUBE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/service-announcer}
    out="$cache/$name-$version-$key"
    for command in $commands; do
        [ -x "$out/$command" ] || complete=false
    done
    if $complete; then
        touch "$out"  # in use: kept by the clean-up below
        echo "$out"
        return 0
    fi
    go=$(command -v go || true)
    [ -n "$go" ] || go=/usr/local/go/bin/go
    if ! [ -x "$go" ]; then
        echo "$tool: needs Go (none on PATH nor in /usr/local/go): it builds $name $version" >&2
        return 1
    fi
    mkdir -p "$cache"
    staging=$(mktemp -d "$cache/build.XXXXXX")
    started=$SECONDS
    echo "$tool: building $commands of $name $version with $("$go" version | cut -d' ' -f3) into $out" \
        "(the first time: about $minutes minutes on 2 cores)" >&2
    GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
        "$go" build -v -trimpath -ldflags "$ldflags" -o "$staging/" "$@" >"$staging/build.log" 2>&1 &
    builder=$!
    while kill -0 "$builder" 2>/dev/null; do
        sleep 15
        if kill -0 "$builder" 2>/dev/null; then
            echo "$tool: $(grep -c . "$staging/build.log" || true) packages compiled, $((SECONDS - started)) s" >&2
        fi
    done
    if ! wait "$builder"; then
        tail -n 30 "$staging/build.log" >&2
        echo "$tool: the build failed (above: the last lines of go build's output)" >&2
        rm -rf "$staging"
        return 1
    fi
    [ ! -e "$staging/server" ] || mv "$staging/server" "$staging/${commands%% *}"
    for command in $commands; do
        [ -x "$staging/$command" ] || { echo "$tool: $command was not built" >&2; rm -rf "$staging"; return 1; }
    done
    rm -f "$staging/build.log"
    rm -rf "$out"
    chmod 755 "$staging"
    mv "$staging" "$out"
    find "$cache" -mindepth 1 -maxdepth 1 -name "$name-*" ! -path "$out" -mtime +7 -exec rm -rf {} +
    echo "$tool: built in $((SECONDS - started)) s: $commands" >&2
    echo "$out"
}
