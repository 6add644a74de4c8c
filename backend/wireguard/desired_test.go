package wireguard

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// upstreamLease turns an etcd key and value written by upstream flanneld into a lease,
// as the etcd subnet manager does.
func upstreamLease(t *testing.T, key, value string) subnet.Lease {
	t.Helper()
	sn, sn6, err := subnet.ParseSubnetKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var attrs subnet.LeaseAttrs
	if err := json.Unmarshal([]byte(value), &attrs); err != nil {
		t.Fatal(err)
	}
	return subnet.Lease{Subnet: sn, IPv6Subnet: sn6, EnableIPv4: sn.IsValid(), EnableIPv6: sn6.IsValid(), Attrs: attrs}
}

func testNode(mode Mode, v4, v6 bool) *nodeInfo {
	own := &subnet.Lease{}
	if v4 {
		own.EnableIPv4, own.Subnet = true, netip.MustParsePrefix("10.5.1.0/24")
	}
	if v6 {
		own.EnableIPv6, own.IPv6Subnet = true, netip.MustParsePrefix("2001:db8:1000:1::/64")
	}
	return &nodeInfo{cfg: Config{ListenPort: 51820, ListenPortV6: 51821, MTU: 1500, Mode: mode}, pub: testPub, v4: v4, v6: v6,
		network: netip.MustParsePrefix("10.5.0.0/16"), network6: netip.MustParsePrefix("2001:db8:1000::/56"), own: own,
		extAddr: netip.MustParseAddr("198.51.100.1"), extV6Addr: netip.MustParseAddr("2001:db8::1")}
}

// A lease as upstream writes it to etcd becomes a WireGuard peer with its subnet as
// AllowedIPs, PublicIP:Port as endpoint, the PSK and keepalive, exactly as wg(8) would set.
func TestPeerFromUpstreamLease(t *testing.T) {
	l := upstreamLease(t, "10.5.2.0-24",
		`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"`+peerPub.String()+`","Port":51820}}`)
	n := testNode(Separate, true, false)
	devs, probs := n.desired(subnet.PeersOf(l))
	if len(probs) != 0 || len(devs) != 1 {
		t.Fatalf("devices %+v, problems %v", devs, probs)
	}
	want := peerWant{key: peerPub, endpoint: netip.MustParseAddrPort("198.51.100.2:51820"),
		allowed: []netip.Prefix{netip.MustParsePrefix("10.5.2.0/24")}, lease: "10.5.2.0-24"}
	if len(devs[0].peers) != 1 || !equalPeer(devs[0].peers[0], want) {
		t.Fatalf("peers %+v, want %+v", devs[0].peers, want)
	}
	psk := mustKey(testPSK)
	cfg, n1 := diffDevice(&devs[0], wgSettings{key: testPriv, psk: &psk, keepalive: 25 * time.Second},
		&wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820}, nil)
	if n1 != (peerCounts{added: 1}) {
		t.Errorf("counts %+v, want one peer added", n1)
	}
	hexOf := func(k wgtypes.Key) string { return fmt.Sprintf("%x", k[:]) }
	wantText := "public_key=" + hexOf(peerPub) + "\n" +
		"preshared_key=" + hexOf(psk) + "\n" +
		"endpoint=198.51.100.2:51820\n" +
		"persistent_keepalive_interval=25\n" +
		"replace_allowed_ips=true\n" +
		"allowed_ip=10.5.2.0/24\n"
	if got := uapiSet(cfg); got != wantText {
		t.Errorf("configuration text:\n%s\nwant\n%s", got, wantText)
	}

	// an upstream lease from before the Port (v0.16 .. v0.25): the own listen port
	old := upstreamLease(t, "10.5.3.0-24",
		`{"PublicIP":"198.51.100.3","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"`+peerPub.String()+`"}}`)
	devs, _ = n.desired(subnet.PeersOf(old))
	if ep := devs[0].peers[0].endpoint; ep != netip.MustParseAddrPort("198.51.100.3:51820") {
		t.Errorf("endpoint of a lease without Port = %s, want our ListenPort", ep)
	}
}

func equalPeer(a, b peerWant) bool {
	return a.key == b.key && a.endpoint == b.endpoint && slices.Equal(a.allowed, b.allowed) && a.lease == b.lease
}

func dataOf(k wgtypes.Key, port int) json.RawMessage { return marshalBackendData(k, port) }

func TestDesiredDevices(t *testing.T) {
	k2, k3 := mustKey("sB7+SM0p5cCY9zW2vD4dQwpOMFmKoIrpg1EuiHZNwlA="), mustKey("KFs1G7xMvAn7vN1bBZYS0xZj8oZoxuLEnkMEtMgtxX8=")
	p2, p3 := k2.PublicKey(), k3.PublicKey()
	dual := func(i int, pub wgtypes.Key, pub4, pub6 string) subnet.Lease {
		l := subnet.Lease{EnableIPv4: true, EnableIPv6: true,
			Subnet:     netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", i)),
			IPv6Subnet: netip.MustParsePrefix(fmt.Sprintf("2001:db8:1000:%d::/64", i)),
			Attrs:      subnet.LeaseAttrs{BackendType: "wireguard", BackendData: dataOf(pub, 51820), BackendV6Data: dataOf(pub, 51821)}}
		if pub4 != "" {
			l.Attrs.PublicIP = netip.MustParseAddr(pub4)
		}
		if pub6 != "" {
			l.Attrs.PublicIPv6 = netip.MustParseAddr(pub6)
		}
		return l
	}
	peers := subnet.PeersOf(dual(2, p2, "198.51.100.2", "2001:db8::2"), dual(3, p3, "198.51.100.3", "2001:db8::3"))

	t.Run("separate", func(t *testing.T) {
		devs, probs := testNode(Separate, true, true).desired(peers)
		if len(probs) != 0 || len(devs) != 2 {
			t.Fatalf("%+v %v", devs, probs)
		}
		if devs[0].name != "flannel-wg" || devs[0].port != 51820 || devs[1].name != "flannel-wg-v6" || devs[1].port != 51821 {
			t.Fatalf("devices %+v", devs)
		}
		if !slices.Equal(devs[0].addrs, []netip.Prefix{netip.MustParsePrefix("10.5.1.0/32")}) ||
			!slices.Equal(devs[1].addrs, []netip.Prefix{netip.MustParsePrefix("2001:db8:1000:1::/128")}) {
			t.Errorf("addresses %v %v", devs[0].addrs, devs[1].addrs)
		}
		for _, d := range devs {
			if len(d.peers) != 2 {
				t.Fatalf("%s: %+v", d.name, d.peers)
			}
			for _, p := range d.peers {
				v6 := d.name == "flannel-wg-v6"
				if p.endpoint.Addr().Is6() != v6 || len(p.allowed) != 1 || p.allowed[0].Addr().Is6() != v6 {
					t.Errorf("%s: peer %+v", d.name, p)
				}
				if v6 && p.endpoint.Port() != 51821 || !v6 && p.endpoint.Port() != 51820 {
					t.Errorf("%s: port of %+v", d.name, p)
				}
			}
		}
	})
	t.Run("one device: both subnets, the endpoint by mode and the port the peer advertises for that family", func(t *testing.T) {
		for mode, want := range map[Mode]string{IPv4: "198.51.100.2:51820", IPv6: "[2001:db8::2]:51821", Auto: "198.51.100.2:51820"} {
			devs, probs := testNode(mode, true, true).desired(peers)
			if len(probs) != 0 || len(devs) != 1 || devs[0].name != "flannel-wg" || len(devs[0].networks) != 2 || len(devs[0].addrs) != 2 {
				t.Fatalf("%s: %+v %v", mode, devs, probs)
			}
			i := slices.IndexFunc(devs[0].peers, func(p peerWant) bool { return p.key == p2 })
			p := devs[0].peers[i]
			if p.endpoint.String() != want || len(p.allowed) != 2 {
				t.Errorf("%s: peer %+v, want endpoint %s and both subnets", mode, p, want)
			}
		}
	})
	t.Run("auto picks IPv6 only when both ends are public over IPv6 and the peer's IPv4 is private", func(t *testing.T) {
		l := dual(2, p2, "10.0.0.2", "2001:db8::2")
		devs, _ := testNode(Auto, true, true).desired(subnet.PeersOf(l))
		if ep := devs[0].peers[0].endpoint.String(); ep != "[2001:db8::2]:51821" {
			t.Errorf("endpoint %s, want the peer's IPv6 address and its advertised IPv6 port", ep)
		}
		n := testNode(Auto, true, true)
		n.extV6Addr = netip.MustParseAddr("fd00::1")
		devs, _ = n.desired(subnet.PeersOf(l))
		if ep := devs[0].peers[0].endpoint.String(); ep != "10.0.0.2:51820" {
			t.Errorf("with a private own IPv6 address: endpoint %s, want IPv4", ep)
		}
	})
	t.Run("unusable leases are skipped with a reason", func(t *testing.T) {
		vx := dual(4, p2, "198.51.100.4", "2001:db8::4")
		vx.Attrs.BackendType = "vxlan"
		bad := dual(5, p2, "198.51.100.5", "2001:db8::5")
		bad.Attrs.BackendData = json.RawMessage(`{"PublicKey":"nope"}`)
		self := dual(6, testPub, "198.51.100.6", "2001:db8::6")
		dup := dual(7, p2, "198.51.100.7", "2001:db8::7")
		nov6 := dual(8, p3, "198.51.100.8", "")
		devs, probs := testNode(Separate, true, true).desired(subnet.PeersOf(dual(2, p2, "198.51.100.2", "2001:db8::2"), vx, bad, self, dup, nov6))
		var got []string
		for _, p := range probs {
			got = append(got, p.Peer+": "+p.Reason)
		}
		for _, w := range []string{
			`10.5.4.0-24&2001:db8:1000:4::-64: backend type "vxlan" is not wireguard`,
			"10.5.5.0-24&2001:db8:1000:5::-64: BackendData: malformed PublicKey",
			"10.5.6.0-24&2001:db8:1000:6::-64: advertises this node's own public key",
			"10.5.7.0-24&2001:db8:1000:7::-64: public key " + p2.String() + " is advertised by 10.5.2.0-24&2001:db8:1000:2::-64 too",
			"10.5.8.0-24&2001:db8:1000:8::-64: no IPv6 public address",
		} {
			if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
				t.Errorf("problems %q lack %q", got, w)
			}
		}
		// node 8 is still a peer over IPv4; the first lease with p2 keeps it
		if len(devs[0].peers) != 2 || len(devs[1].peers) != 1 {
			t.Errorf("peers %+v / %+v", devs[0].peers, devs[1].peers)
		}
		// only the sound lease of another backend is a counted skip
		for _, p := range probs {
			if want := strings.HasPrefix(p.Peer, "10.5.4.0-24"); (p.Skip == observe.SkippedOtherBackend) != want {
				t.Errorf("problem %+v: Skip %q", p, p.Skip)
			}
		}
	})
}
