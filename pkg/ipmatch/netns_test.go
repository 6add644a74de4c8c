//go:build linux

package ipmatch

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNetns is a throwaway named network namespace and a netlink handle bound to it; the
// test thread enters it only inside lookupIn.
type testNetns struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

func newTestNetns(t *testing.T) *testNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	name := fmt.Sprintf("ipmatch-test-%d-%08x", os.Getpid(), rand.Uint32())

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.NewNamed(name) // also moves this thread into the new namespace
	if err != nil {
		if setErr := netns.Set(orig); setErr != nil {
			t.Fatalf("create netns %s: %v; and cannot return: %v", name, err, setErr) // thread stays locked and dies
		}
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("create netns %s: %v", name, err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("return to the original netns: %v", err) // thread stays locked and dies with the test goroutine
	}
	orig.Close()
	runtime.UnlockOSThread()
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	return &testNetns{ns: ns, h: h}
}

// dummy creates an up link with the given addresses: a dummy link, or where the kernel
// has no dummy driver one end of an up veth pair (peer name+"p").
func (n *testNetns) dummy(t *testing.T, name string, addrs ...string) netlink.Link {
	t.Helper()
	err := n.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"})
		if err == nil {
			peer, perr := n.h.LinkByName(name + "p")
			if perr == nil {
				perr = n.h.LinkSetUp(peer)
			}
			if perr != nil {
				t.Fatalf("veth peer of %s: %v", name, perr)
			}
		}
	}
	if err != nil {
		t.Skipf("cannot create a dummy or veth link: %v", err)
	}
	link, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	if err := n.h.LinkSetUp(link); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
	for _, s := range addrs {
		n.addAddr(t, link, s, 0, 0)
	}
	return link
}

// addAddr adds an address; non-zero lifetimes make it dynamic (preferred 0 = deprecated).
func (n *testNetns) addAddr(t *testing.T, link netlink.Link, cidr string, valid, preferred int) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatalf("parse %s: %v", cidr, err)
	}
	a.ValidLft, a.PreferedLft = valid, preferred
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.h.AddrAdd(link, a); err != nil {
		t.Fatalf("add %s to %s: %v", cidr, link.Attrs().Name, err)
	}
}

func (n *testNetns) route(t *testing.T, r *netlink.Route) {
	t.Helper()
	if err := n.h.RouteAdd(r); err != nil {
		t.Fatalf("add route %v: %v", r, err)
	}
}

func (n *testNetns) defaultRoute(t *testing.T, link netlink.Link, v6 bool) {
	t.Helper()
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if v6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	n.route(t, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_UNIVERSE})
}

// lookupIn runs LookupExtIface with this thread inside the namespace and then returns.
func (n *testNetns) lookupIn(t *testing.T, opts Options) (*Interface, error) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(n.ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter test netns: %v", err)
	}
	ext, lookupErr := LookupExtIface(opts)
	if err := netns.Set(orig); err != nil {
		t.Fatalf("return to the original netns: %v", err) // thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ext, lookupErr
}

// TestLookupNetns exercises the selection against real links in a private namespace:
//
//	ext0  192.0.2.10/24, 192.0.2.11/24, 2001:db8::10/64  (default routes v4 and v6)
//	ext1  198.51.100.10/25, 198.51.100.20/25, 2001:db8:1::10/64
//	ext2  198.51.100.140/26, 198.51.100.150/26; route 198.51.100.192/26 dev ext2 src 198.51.100.150
//	pref0 198.51.100.226/28 dynamic, 198.51.100.227/28 permanent, 198.51.100.228/28 deprecated
//	bare0 no addresses
//
// noMatch stands for the error that no selector matched, which lists the interfaces.
const noMatch = "(no match)"

func TestLookupNetns(t *testing.T) {
	n := newTestNetns(t)
	ext0 := n.dummy(t, "ext0", "192.0.2.10/24", "192.0.2.11/24")
	ext1 := n.dummy(t, "ext1", "198.51.100.10/25", "198.51.100.20/25")
	ext2 := n.dummy(t, "ext2", "198.51.100.140/26", "198.51.100.150/26")
	pref0 := n.dummy(t, "pref0")
	n.addAddr(t, pref0, "198.51.100.226/28", 3600, 3600)
	n.addAddr(t, pref0, "198.51.100.227/28", 0, 0)
	n.addAddr(t, pref0, "198.51.100.228/28", 3600, 0)
	n.dummy(t, "bare0")
	n.defaultRoute(t, ext0, false)
	_, reachNet, _ := net.ParseCIDR("198.51.100.192/26")
	n.route(t, &netlink.Route{LinkIndex: ext2.Attrs().Index, Dst: reachNet, Src: net.ParseIP("198.51.100.150"), Scope: netlink.SCOPE_LINK})

	n.addAddr(t, ext0, "2001:db8::10/64", 0, 0)
	n.addAddr(t, ext1, "2001:db8:1::10/64", 0, 0)
	n.defaultRoute(t, ext0, true)

	tests := []struct {
		name    string
		opts    Options
		want    *wantExt
		wantErr string
	}{
		{name: "default route", opts: Options{EnableIPv4: true},
			want: &wantExt{iface: "ext0", ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10", mtu: 1500}},
		{name: "default route, dual stack", opts: Options{EnableIPv4: true, EnableIPv6: true},
			want: &wantExt{iface: "ext0", ifaceAddr: "192.0.2.10", ifaceV6: "2001:db8::10", extAddr: "192.0.2.10", extV6Addr: "2001:db8::10", mtu: 1500}},
		{name: "default route, IPv6 only", opts: Options{EnableIPv6: true},
			want: &wantExt{iface: "ext0", ifaceV6: "2001:db8::10", extV6Addr: "2001:db8::10", mtu: 1500}},
		{name: "public IP selects its interface", opts: Options{EnableIPv4: true, PublicIP: "198.51.100.20"},
			want: &wantExt{iface: "ext1", ifaceAddr: "198.51.100.20", extAddr: "198.51.100.20", mtu: 1500}},
		{name: "public IP must be local", opts: Options{EnableIPv4: true, PublicIP: "198.51.100.99"},
			wantErr: "Failed to find any valid interface to use: public IP 198.51.100.99 is not an address of any local interface (without --iface, --iface-regex or --iface-can-reach the public IP selects the interface)"},
		{name: "ByName", opts: Options{EnableIPv4: true, Ifaces: []string{"ext1"}},
			want: &wantExt{iface: "ext1", ifaceAddr: "198.51.100.10", extAddr: "198.51.100.10", mtu: 1500}},
		{name: "ByName with public IP", opts: Options{EnableIPv4: true, Ifaces: []string{"ext1"}, PublicIP: "192.0.2.77"},
			want: &wantExt{iface: "ext1", ifaceAddr: "198.51.100.10", extAddr: "192.0.2.77", mtu: 1500}},
		{name: "ByIPv4", opts: Options{EnableIPv4: true, Ifaces: []string{"198.51.100.20"}},
			want: &wantExt{iface: "ext1", ifaceAddr: "198.51.100.20", extAddr: "198.51.100.20", mtu: 1500}},
		{name: "ByIPv4 secondary on default interface", opts: Options{EnableIPv4: true, Ifaces: []string{"192.0.2.11"}},
			want: &wantExt{iface: "ext0", ifaceAddr: "192.0.2.11", extAddr: "192.0.2.11", mtu: 1500}},
		{name: "ByIPv6, dual stack", opts: Options{EnableIPv4: true, EnableIPv6: true, Ifaces: []string{"2001:db8:1::10"}},
			want: &wantExt{iface: "ext1", ifaceAddr: "198.51.100.10", ifaceV6: "2001:db8:1::10", extAddr: "198.51.100.10", extV6Addr: "2001:db8:1::10", mtu: 1500}},
		{name: "ByIfRegexForIPv4", opts: Options{EnableIPv4: true, IfaceRegexes: []string{`^198\.51\.100\.15\d$`}},
			want: &wantExt{iface: "ext2", ifaceAddr: "198.51.100.150", extAddr: "198.51.100.150", mtu: 1500}},
		{name: "ByIfRegexForName", opts: Options{EnableIPv4: true, IfaceRegexes: []string{`^ext2$`}},
			want: &wantExt{iface: "ext2", ifaceAddr: "198.51.100.140", extAddr: "198.51.100.140", mtu: 1500}},
		{name: "ByIfRegex skips deprecated addresses", opts: Options{EnableIPv4: true, IfaceRegexes: []string{`^198\.51\.100\.228$`}},
			wantErr: noMatch},
		{name: "permanent address preferred over dynamic", opts: Options{EnableIPv4: true, Ifaces: []string{"pref0"}},
			want: &wantExt{iface: "pref0", ifaceAddr: "198.51.100.227", extAddr: "198.51.100.227", mtu: 1500}},
		{name: "ByIfCanReach", opts: Options{EnableIPv4: true, IfaceCanReach: "198.51.100.200"},
			want: &wantExt{iface: "ext2", ifaceAddr: "198.51.100.150", extAddr: "198.51.100.150", mtu: 1500}},
		{name: "ByIfCanReach via the default route", opts: Options{EnableIPv4: true, IfaceCanReach: "192.0.2.200"},
			want: &wantExt{iface: "ext0", ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10", mtu: 1500}},
		{name: "interface without addresses is skipped", opts: Options{EnableIPv4: true, Ifaces: []string{"bare0", "ext2"}},
			want: &wantExt{iface: "ext2", ifaceAddr: "198.51.100.140", extAddr: "198.51.100.140", mtu: 1500}},
		{name: "precedence: iface over regex over can-reach",
			opts: Options{EnableIPv4: true, Ifaces: []string{"nope0", "ext1"}, IfaceRegexes: []string{"^ext0$"}, IfaceCanReach: "198.51.100.200"},
			want: &wantExt{iface: "ext1", ifaceAddr: "198.51.100.10", extAddr: "198.51.100.10", mtu: 1500}},
		{name: "precedence: regex over can-reach",
			opts: Options{EnableIPv4: true, Ifaces: []string{"nope0"}, IfaceRegexes: []string{"^nope$", "^ext0$"}, IfaceCanReach: "198.51.100.200"},
			want: &wantExt{iface: "ext0", ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10", mtu: 1500}},
		{name: "precedence: can-reach last",
			opts: Options{EnableIPv4: true, Ifaces: []string{"nope0", "bare0"}, IfaceRegexes: []string{"^nope$"}, IfaceCanReach: "198.51.100.200"},
			want: &wantExt{iface: "ext2", ifaceAddr: "198.51.100.150", extAddr: "198.51.100.150", mtu: 1500}},
		{name: "nothing matches", opts: Options{EnableIPv4: true, Ifaces: []string{"nope0", "192.0.2.99"}, IfaceRegexes: []string{"^zzz"}},
			wantErr: noMatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ext, err := n.lookupIn(t, tc.opts)
			if tc.wantErr == noMatch {
				// The interfaces are listed with their addresses (the kernel adds link-local ones).
				if err == nil || !strings.HasPrefix(err.Error(), "Failed to find interface to use that matches the interfaces and/or regexes provided; the interfaces here are lo (") ||
					!strings.Contains(err.Error(), ", ext0 (192.0.2.10, 192.0.2.11, 2001:db8::10") || !strings.Contains(err.Error(), ", ext1 (198.51.100.10, 198.51.100.20, 2001:db8:1::10") {
					t.Fatalf("LookupExtIface error = %v, want the interfaces listed", err)
				}
				return
			}
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("LookupExtIface error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LookupExtIface: %v", err)
			}
			checkExt(t, ext, tc.want)
			if idx := ext.Iface.Index; idx <= 1 {
				t.Errorf("interface index %d looks wrong", idx)
			}
		})
	}
}

// TestLookupNetnsDualDefaultMismatch: the v4 and v6 default routes leave through
// different interfaces.
func TestLookupNetnsDualDefaultMismatch(t *testing.T) {
	n := newTestNetns(t)
	a := n.dummy(t, "ext0", "192.0.2.10/24", "2001:db8::10/64")
	b := n.dummy(t, "ext1", "198.51.100.10/24", "2001:db8:1::10/64")
	n.defaultRoute(t, a, false)
	n.defaultRoute(t, b, true)

	_, err := n.lookupIn(t, Options{EnableIPv4: true, EnableIPv6: true})
	want := "Failed to find any valid interface to use: v6 default route interface ext1 must be the same with v4 default route interface ext0"
	if err == nil || err.Error() != want {
		t.Fatalf("LookupExtIface error = %v, want %q", err, want)
	}
	// Each family alone is fine.
	ext, err := n.lookupIn(t, Options{EnableIPv6: true})
	if err != nil {
		t.Fatalf("IPv6 only: %v", err)
	}
	checkExt(t, ext, &wantExt{iface: "ext1", ifaceV6: "2001:db8:1::10", extV6Addr: "2001:db8:1::10", mtu: 1500})
}

// TestLookupNetnsNoDefaultRoute: without selectors and without a default route.
func TestLookupNetnsNoDefaultRoute(t *testing.T) {
	n := newTestNetns(t)
	n.dummy(t, "ext0", "192.0.2.10/24")
	_, err := n.lookupIn(t, Options{EnableIPv4: true})
	want := "Failed to find any valid interface to use: no IPv4 default route found"
	if err == nil || err.Error() != want {
		t.Fatalf("LookupExtIface error = %v, want %q", err, want)
	}
}
