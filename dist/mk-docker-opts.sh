#!/bin/sh
# mk-docker-opts.sh turns flanneld's subnet file into dockerd options: docker0's address
# (--bip), Docker's own masquerading (--ip-masq, the opposite of FLANNEL_IPMASQ) and the
# MTU (--mtu); with -6 also --ipv6 and --fixed-cidr-v6. It writes them as an environment
# file for docker.service (dist/docker.service.d/flannel.conf). Options and, for an IPv4
# subnet file, output are those of upstream flannel's script of the same name; the
# differences are listed in Documentation/differences-from-upstream.md.
# POSIX sh; uses awk, mktemp, mv and, for the routing-table check, ip.

me=mk-docker-opts.sh

usage() {
	cat <<EOF
usage: $me [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-k COMBINED-KEY] [-m] [-6]

Writes the dockerd options for the subnet flanneld leased to this node.
  -f FILE  flanneld's subnet file (default /run/flannel/subnet.env)
  -d FILE  the environment file to write (default /run/docker_opts.env)
  -i       one variable per option (DOCKER_OPT_BIP, DOCKER_OPT_IPMASQ, DOCKER_OPT_MTU)
  -c       all options in one variable, DOCKER_OPTS; its value in the environment, if
           any, comes first
  -k KEY   name that variable KEY instead of DOCKER_OPTS
  -m       leave out --ip-masq
  -6       add IPv6: --fixed-cidr-v6 from FLANNEL_IPV6_SUBNET and --ipv6
           (DOCKER_OPT_FIXED_CIDR_V6, DOCKER_OPT_IPV6)
Without -i and -c both are written. Exit status 1, and nothing written, when the subnet
file is missing or incomplete, or when the routing table sends the subnet to a gateway.
EOF
}

die() {
	printf '%s: %s\n' "$me" "$*" >&2
	exit 1
}

# network CIDR prints CIDR's network: address bits past the prefix length cleared, IPv6
# in canonical text (RFC 5952, as ip(8) prints it). It fails when CIDR is not an IPv4 or
# IPv6 address with a prefix length.
network() {
	awk -v cidr="$1" '
	function dec(s, max) {
		if (s !~ /^(0|[1-9][0-9]?[0-9]?)$/ || s + 0 > max) return -1
		return s + 0
	}
	function hex(s,   i, n) {
		if (s !~ /^[0-9a-fA-F][0-9a-fA-F]?[0-9a-fA-F]?[0-9a-fA-F]?$/) return -1
		s = tolower(s)
		n = 0
		for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
		return n
	}
	# v with only its first keep of width bits left
	function clear(v, width, keep) {
		if (keep >= width) return v
		if (keep <= 0) return 0
		return v - v % (2 ^ (width - keep))
	}
	BEGIN {
		if (split(cidr, part, "/") != 2) exit 1
		addr = part[1]
		if (index(addr, ":") == 0) {
			len = dec(part[2], 32)
			if (len < 0 || split(addr, o, ".") != 4) exit 1
			out = ""
			for (i = 1; i <= 4; i++) {
				v = dec(o[i], 255)
				if (v < 0) exit 1
				out = out (i > 1 ? "." : "") clear(v, 8, len - 8 * (i - 1))
			}
			print out "/" len
			exit 0
		}
		len = dec(part[2], 128)
		if (len < 0 || addr !~ /^[0-9a-fA-F:]+$/) exit 1
		dc = index(addr, "::")
		if (dc) {
			if (index(substr(addr, dc + 1), "::")) exit 1
			head = substr(addr, 1, dc - 1)
			tail = substr(addr, dc + 2)
			nh = head == "" ? 0 : split(head, h, ":")
			nt = tail == "" ? 0 : split(tail, t, ":")
			if (nh + nt > 7) exit 1
			for (i = 1; i <= 8; i++) grp[i] = "0"
			for (i = 1; i <= nh; i++) grp[i] = h[i]
			for (i = 1; i <= nt; i++) grp[8 - nt + i] = t[i]
		} else if (split(addr, grp, ":") != 8) {
			exit 1
		}
		for (i = 1; i <= 8; i++) {
			v = hex(grp[i])
			if (v < 0) exit 1
			g[i] = clear(v, 16, len - 16 * (i - 1))
		}
		# The longest run of two or more zero groups (the first of equals) becomes "::".
		best = 0
		run = 1
		for (i = 1; i <= 8; i = j) {
			for (j = i; j <= 8 && g[j] == 0; j++) ;
			if (j - i > run) { best = i; run = j - i }
			if (j == i) j++
		}
		out = ""
		for (i = 1; i <= 8; i++) {
			if (i == best) { out = out "::"; i += run - 1; continue }
			if (out != "" && out !~ /:$/) out = out ":"
			out = out sprintf("%x", g[i])
		}
		print out "/" len
	}' </dev/null
}

# check_routes FAMILY NET SUBNET exits 1 when the main routing table (ip FAMILY route show)
# has a route for exactly NET via a gateway: docker0 would get SUBNET while that route sends
# its traffic elsewhere. Without a usable ip command it warns and returns.
check_routes() {
	if ! command -v ip >/dev/null 2>&1; then
		printf '%s: warning: ip not found, routing table not checked for %s\n' "$me" "$2" >&2
		return 0
	fi
	if ! table=$(ip "$1" route show 2>&1); then
		printf '%s: warning: ip %s route show failed (%s), routing table not checked for %s\n' \
			"$me" "$1" "$table" "$2" >&2
		return 0
	fi
	found=$(printf '%s\n' "$table" | awk -v net="$2" '
	function flush() {
		if (dst == net && via) print route
	}
	{ sub(/[ \t]+$/, "") }
	/^[ \t]/ {
		# a nexthop line of the multipath route above
		sub(/^[ \t]+/, "")
		route = route " " $0
		if ($1 == "nexthop" && $2 == "via") via = 1
		next
	}
	{
		flush()
		dst = $1 == "unicast" ? $2 : $1
		if (dst !~ /\//) dst = dst (net ~ /:/ ? "/128" : "/32")
		route = $0
		via = 0
		for (i = 2; i <= NF; i++) if ($i == "via") via = 1
	}
	END { flush() }')
	if [ -n "$found" ]; then
		printf 'Your routing table already contains the subnet: %s\n' "$found" >&2
		die "docker0 would take $3, but that route sends $2 to a gateway;" \
			"delete the route if it is stale (ip route del $2) and run again"
	fi
}

flannel_env=/run/flannel/subnet.env
docker_env=/run/docker_opts.env
key=DOCKER_OPTS
indiv=false
combined=false
ipmasq=true
ipv6=false
while getopts 'f:d:icmk:6h' opt; do
	case $opt in
	f) flannel_env=$OPTARG ;;
	d) docker_env=$OPTARG ;;
	i) indiv=true ;;
	c) combined=true ;;
	m) ipmasq=false ;;
	k) key=$OPTARG ;;
	6) ipv6=true ;;
	h)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 1
		;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument: $1 (see $me -h)"
case $key in
'' | [0-9]* | *[!A-Za-z0-9_]*) die "-k $key: not a shell variable name" ;;
esac
if ! $indiv && ! $combined; then
	indiv=true
	combined=true
fi

# The subnet file is read, never run: KEY=value lines, optionally quoted, as flanneld
# writes them. Values come only from the file, whatever the environment holds.
if [ -d "$flannel_env" ] || [ ! -r "$flannel_env" ]; then
	die "cannot read $flannel_env: is flanneld running on this node? (it writes the file once it holds a lease)"
fi
subnet=
subnet6=
mtu=
masq=
while IFS= read -r line || [ -n "$line" ]; do
	line=${line#"${line%%[![:space:]]*}"}
	case $line in
	export[[:space:]]*)
		line=${line#export}
		line=${line#"${line%%[![:space:]]*}"}
		;;
	esac
	case $line in
	FLANNEL_*=*) ;;
	*) continue ;;
	esac
	value=${line#*=}
	value=${value%"${value##*[![:space:]]}"}
	case $value in
	\"*\")
		value=${value#\"}
		value=${value%\"}
		;;
	\'*\')
		value=${value#\'}
		value=${value%\'}
		;;
	esac
	case ${line%%=*} in
	FLANNEL_SUBNET) subnet=$value ;;
	FLANNEL_IPV6_SUBNET) subnet6=$value ;;
	FLANNEL_MTU) mtu=$value ;;
	FLANNEL_IPMASQ) masq=$value ;;
	esac
done <"$flannel_env"

if [ -z "$subnet" ]; then
	if [ -z "$subnet6" ]; then
		die "FLANNEL_SUBNET is missing in $flannel_env"
	elif ! $ipv6; then
		die "FLANNEL_SUBNET is missing in $flannel_env, which holds only an IPv6 subnet: run with -6 for IPv6 options"
	fi
fi
net=
if [ -n "$subnet" ]; then
	if ! net=$(network "$subnet") || [ "${net#*:}" != "$net" ]; then
		die "FLANNEL_SUBNET in $flannel_env is not an IPv4 address with a prefix length: $subnet"
	fi
fi
net6=
if $ipv6 && [ -n "$subnet6" ]; then
	if ! net6=$(network "$subnet6") || [ "${net6#*:}" = "$net6" ]; then
		die "FLANNEL_IPV6_SUBNET in $flannel_env is not an IPv6 address with a prefix length: $subnet6"
	fi
fi
case $mtu in
*[!0-9]*) die "FLANNEL_MTU in $flannel_env is not a number: $mtu" ;;
esac
masq_opt=
if $ipmasq && [ -n "$masq" ]; then
	# flanneld masquerades pod traffic leaving the overlay when FLANNEL_IPMASQ=true; Docker
	# must not do it a second time, and must do it when flanneld does not.
	case $masq in
	true) masq_opt=--ip-masq=false ;;
	false) masq_opt=--ip-masq=true ;;
	*) die "Invalid value of FLANNEL_IPMASQ: $masq (in $flannel_env; flanneld writes true or false)" ;;
	esac
fi

[ -z "$net" ] || check_routes -4 "$net" "$subnet"
[ -z "$net6" ] || check_routes -6 "$net6" "$subnet6"

# Options in the alphabetical order of their variable names, the combined value led by
# the variable's value in the environment (upstream's behaviour).
nl='
'
text=
eval "opts=\${$key-}"
[ -z "$opts" ] || opts="$opts "
emit() {
	if $indiv; then
		text="$text$1=\"$2\"$nl"
	fi
	opts="$opts $2"
}
[ -z "$subnet" ] || emit DOCKER_OPT_BIP "--bip=$subnet"
[ -z "$net6" ] || emit DOCKER_OPT_FIXED_CIDR_V6 "--fixed-cidr-v6=$net6"
[ -z "$masq_opt" ] || emit DOCKER_OPT_IPMASQ "$masq_opt"
[ -z "$net6" ] || emit DOCKER_OPT_IPV6 --ipv6
[ -z "$mtu" ] || emit DOCKER_OPT_MTU "--mtu=$mtu"
if $combined; then
	text="$text$key=\"$opts\"$nl"
fi

# A regular file (or a new one) is replaced atomically; anything else, such as
# /dev/stdout, is written in place.
if [ -L "$docker_env" ] || { [ -e "$docker_env" ] && [ ! -f "$docker_env" ]; }; then
	printf '%s' "$text" >"$docker_env" || die "cannot write $docker_env"
	exit 0
fi
tmp=$(mktemp "$docker_env.XXXXXX") || die "cannot create a file beside $docker_env"
if ! { printf '%s' "$text" >"$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$docker_env"; }; then
	rm -f "$tmp"
	die "cannot write $docker_env"
fi
