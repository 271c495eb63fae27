#!/bin/sh
# libbsq exports exactly the functions its public header declares.
set -u
top=${TOP_SRCDIR:-$(dirname "$0")/..}
want=$(grep -o 'bsq_[a-z0-9_]* *(' "$top/lib/bsq.h" | tr -d ' (' | sort -u)
have=$(sort -u "$top/lib/libbsq.sym")
if [ "$want" = "$have" ]; then
    echo "1 passed, 0 failed"
    exit 0
fi
echo "lib/libbsq.sym differs from the functions in lib/bsq.h:"
printf '%s\n' "$want" > "${TMPDIR:-/tmp}/bsq-want.$$"
printf '%s\n' "$have" | diff "${TMPDIR:-/tmp}/bsq-want.$$" - || true
rm -f "${TMPDIR:-/tmp}/bsq-want.$$"
echo "0 passed, 1 failed"
exit 1
