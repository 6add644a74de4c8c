package subnetenv

import (
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestText(t *testing.T) {
	cases := []struct {
		env  Env
		want string
	}{
		{Env{Network: netip.MustParsePrefix("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"), MTU: 1450, IPMasq: true},
			"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"},
		{Env{Network: netip.MustParsePrefix("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.85.0/24"),
			IPv6Network: netip.MustParsePrefix("2001:cafe:42::/56"), IPv6Subnet: netip.MustParsePrefix("2001:cafe:42::/64"), MTU: 1450},
			"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"},
		{Env{IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:27::/64"), MTU: 1500},
			"FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:27::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"},
	}
	for _, c := range cases {
		if got := c.env.Text(); got != c.want {
			t.Errorf("got\n%s\nwant\n%s", got, c.want)
		}
	}
}

func TestWriteReadAtomicMode(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "flannel", "subnet.env")
	e := Env{Network: netip.MustParsePrefix("10.1.0.0/16"), Subnet: netip.MustParsePrefix("10.1.74.0/24"), MTU: 1472}
	for i := 0; i < 2; i++ { // second write replaces the first
		if err := Write(path, e); err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644 regardless of umask", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	vals, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if sn, ok := PrefixValue(vals, "FLANNEL_SUBNET"); !ok || sn.String() != "10.1.74.0/24" {
		t.Fatalf("FLANNEL_SUBNET read back as %v %v", sn, ok)
	}
	if vals["FLANNEL_MTU"] != "1472" || vals["FLANNEL_IPMASQ"] != "false" {
		t.Fatalf("%v", vals)
	}
}

func TestParse(t *testing.T) {
	vals := Parse([]byte("# comment\n\nexport FLANNEL_NETWORK=\"10.1.0.0/16\"\nFLANNEL_SUBNET=10.1.74.1/24,10.2.0.1/24\nBAD\nFLANNEL_IPV6_SUBNET='fc00::1/64'\n"))
	if vals["FLANNEL_NETWORK"] != "10.1.0.0/16" || vals["FLANNEL_IPV6_SUBNET"] != "fc00::1/64" {
		t.Fatalf("%v", vals)
	}
	if _, ok := PrefixValue(vals, "FLANNEL_SUBNET"); ok {
		t.Fatal("a list of subnets must not be taken as the previous subnet")
	}
	if _, ok := PrefixValue(vals, "MISSING"); ok {
		t.Fatal("missing key")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		vals := Parse(data)
		for k := range vals {
			PrefixValue(vals, k)
		}
	})
}
