package subnetenv

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestParseContents(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    Contents
		wantErr string
	}{
		{name: "ipv4 as flanneld writes it",
			in:   "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			want: Contents{Networks: prefixes("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"), MTU: 1450, IPMasq: true}},
		{name: "dual stack",
			in: "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:42::/56\n" +
				"FLANNEL_IPV6_SUBNET=2001:db8:42:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
			want: Contents{Networks: prefixes("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"),
				IPv6Networks: prefixes("2001:db8:42::/56"), IPv6Subnet: netip.MustParsePrefix("2001:db8:42:7::/64"), MTU: 1430}},
		{name: "ipv6 only",
			in:   "FLANNEL_IPV6_NETWORK=2001:db8:42::/56\nFLANNEL_IPV6_SUBNET=2001:db8:42:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
			want: Contents{IPv6Networks: prefixes("2001:db8:42::/56"), IPv6Subnet: netip.MustParsePrefix("2001:db8:42:7::/64"), MTU: 1430, IPMasq: true}},
		{name: "network lists keep order and drop duplicates",
			in:   "FLANNEL_NETWORK=10.5.0.0/16,10.6.0.0/16, 10.5.0.1/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes\n",
			want: Contents{Networks: prefixes("10.5.0.0/16", "10.6.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"), MTU: 1450}},
		{name: "last line wins, unknown keys ignored",
			in:   "FLANNEL_MTU=1\nFOO=bar\nFLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true",
			want: Contents{Networks: prefixes("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"), MTU: 1500, IPMasq: true}},

		{name: "empty", in: "", wantErr: "subnet file is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"},
		{name: "no subnet", in: "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			wantErr: "is missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET"},
		{name: "no mtu", in: "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_IPMASQ=true\n",
			wantErr: "is missing FLANNEL_MTU"},
		{name: "no ipmasq", in: "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_MTU=1450\n",
			wantErr: "is missing FLANNEL_IPMASQ"},
		{name: "bad subnet", in: "FLANNEL_SUBNET=10.5.85.1\n", wantErr: "FLANNEL_SUBNET: invalid CIDR address: 10.5.85.1"},
		{name: "subnet list", in: "FLANNEL_SUBNET=10.5.85.1/24,10.6.1.1/24\n", wantErr: "FLANNEL_SUBNET: invalid CIDR address"},
		{name: "empty network item", in: "FLANNEL_NETWORK=10.5.0.0/16,\n", wantErr: "FLANNEL_NETWORK: invalid CIDR address: "},
		{name: "ipv6 in FLANNEL_NETWORK", in: "FLANNEL_NETWORK=2001:db8::/56\n", wantErr: "FLANNEL_NETWORK: 2001:db8::/56 is not an IPv4 prefix"},
		{name: "ipv4 in FLANNEL_IPV6_SUBNET", in: "FLANNEL_IPV6_SUBNET=10.5.85.1/24\n", wantErr: "FLANNEL_IPV6_SUBNET: 10.5.85.1/24 is not an IPv6 prefix"},
		{name: "bad mtu", in: "FLANNEL_MTU=-1\n", wantErr: `FLANNEL_MTU: invalid value "-1"`},
		{name: "mtu too big", in: "FLANNEL_MTU=4294967296\n", wantErr: `FLANNEL_MTU: invalid value "4294967296"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseContents([]byte(c.in))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// What flanneld writes, its consumers read back.
func TestContentsReadsWhatTextWrites(t *testing.T) {
	for _, e := range []Env{
		{Network: netip.MustParsePrefix("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"), MTU: 1450, IPMasq: true},
		{IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:27::/64"), MTU: 1500},
		{Network: netip.MustParsePrefix("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"),
			IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:27::/64"), MTU: 1400},
	} {
		c, err := ParseContents([]byte(e.Text()))
		if err != nil {
			t.Fatalf("%q: %v", e.Text(), err)
		}
		var nets, nets6 []netip.Prefix
		if e.Network.IsValid() {
			nets = []netip.Prefix{e.Network}
		}
		if e.IPv6Network.IsValid() {
			nets6 = []netip.Prefix{e.IPv6Network}
		}
		want := Contents{Networks: nets, Subnet: e.Subnet, IPv6Networks: nets6, IPv6Subnet: e.IPv6Subnet, MTU: uint32(e.MTU), IPMasq: e.IPMasq}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("%q read as %+v, want %+v", e.Text(), c, want)
		}
	}
}

func TestLoadContents(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "subnet.env")
	if _, err := LoadContents(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, "partial.env")
	if err := os.WriteFile(path, []byte("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadContents(path)
	var ie *IncompleteError
	if !errors.As(err, &ie) || err.Error() != path+" is missing FLANNEL_MTU, FLANNEL_IPMASQ" {
		t.Fatalf("incomplete file: %v", err)
	}
}

func FuzzParseContents(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("FLANNEL_NETWORK=10.5.0.0/16,10.6.0.0/16\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1\nFLANNEL_IPMASQ=x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseContents(data)
		if err != nil {
			return
		}
		if len(c.Networks)+len(c.IPv6Networks) == 0 || (!c.Subnet.IsValid() && !c.IPv6Subnet.IsValid()) {
			t.Fatalf("accepted without a network or subnet: %+v", c)
		}
		for _, p := range append(append([]netip.Prefix{c.Subnet, c.IPv6Subnet}, c.Networks...), c.IPv6Networks...) {
			if p.IsValid() && p != p.Masked() {
				t.Fatalf("%s not masked", p)
			}
		}
		for _, p := range append([]netip.Prefix{c.Subnet}, c.Networks...) {
			if p.IsValid() && !p.Addr().Is4() {
				t.Fatalf("%s among the IPv4 values", p)
			}
		}
		for _, p := range append([]netip.Prefix{c.IPv6Subnet}, c.IPv6Networks...) {
			if p.IsValid() && (p.Addr().Is4() || p.Addr().Is4In6()) {
				t.Fatalf("%s among the IPv6 values", p)
			}
		}
	})
}
