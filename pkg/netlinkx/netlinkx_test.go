package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestIPNetPrefixRoundTrip(t *testing.T) {
	for _, s := range []string{"10.5.1.0/24", "10.5.1.7/16", "0.0.0.0/0", "192.0.2.1/32", "fd00:5::/48", "2001:db8::1/128", "::/0"} {
		p := netip.MustParsePrefix(s)
		n := IPNet(p)
		got, ok := Prefix(n)
		if !ok || got != p {
			t.Errorf("%s -> %v -> %v, %v", s, n, got, ok)
		}
	}
	if IPNet(netip.Prefix{}) != nil {
		t.Error("zero prefix should give nil")
	}
}

func TestPrefixFromKernelShapes(t *testing.T) {
	cases := []struct {
		n    *net.IPNet
		want string
		ok   bool
	}{
		{&net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(24, 32)}, "10.1.2.3/24", true},       // 16-byte IP, 4-byte mask
		{&net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(120, 128)}, "10.1.2.3/24", true},     // v4-mapped with 16-byte mask
		{&net.IPNet{IP: net.ParseIP("10.1.2.3").To4(), Mask: net.CIDRMask(24, 32)}, "10.1.2.3/24", true}, // 4-byte
		{&net.IPNet{IP: net.ParseIP("2001:db8::1"), Mask: net.CIDRMask(24, 32)}, "", false},              // v6 with v4 mask
		{&net.IPNet{IP: net.ParseIP("10.1.2.3").To4(), Mask: net.IPv4Mask(255, 0, 255, 0)}, "", false},   // non-canonical
		{&net.IPNet{IP: net.IP{1, 2, 3}, Mask: net.CIDRMask(24, 32)}, "", false},                         // malformed
		{nil, "", false},
	}
	for _, tc := range cases {
		got, ok := Prefix(tc.n)
		if ok != tc.ok || (ok && got.String() != tc.want) {
			t.Errorf("Prefix(%v) = %v, %v; want %s, %v", tc.n, got, ok, tc.want, tc.ok)
		}
	}
	if a, ok := Addr(net.ParseIP("192.0.2.1")); !ok || !a.Is4() {
		t.Errorf("Addr of a 16-byte v4 = %v, %v", a, ok)
	}
	if _, ok := Addr(nil); ok {
		t.Error("Addr(nil) ok")
	}
}

func TestErrorClasses(t *testing.T) {
	cases := []struct {
		err             error
		notFound, exist bool
	}{
		{nil, false, false},
		{unix.ENOENT, true, false},
		{fmt.Errorf("wrapped: %w", unix.ESRCH), true, false},
		{unix.ENODEV, true, false},
		{netlink.LinkNotFoundError{}, true, false},
		{unix.EEXIST, false, true},
		{unix.EPERM, false, false},
		{errors.New("other"), false, false},
	}
	for _, tc := range cases {
		if IsNotFound(tc.err) != tc.notFound || IsExist(tc.err) != tc.exist {
			t.Errorf("%v: IsNotFound %v IsExist %v", tc.err, IsNotFound(tc.err), IsExist(tc.err))
		}
	}
}

func TestDumpRetriesInterrupted(t *testing.T) {
	calls := 0
	err := Dump(3, "routes", func() error {
		calls++
		if calls < 2 {
			return netlink.ErrDumpInterrupted
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Errorf("err %v after %d calls", err, calls)
	}
	calls = 0
	err = Dump(3, "routes", func() error { calls++; return netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || calls != 3 {
		t.Errorf("persistent interruption: err %v after %d calls", err, calls)
	}
	calls = 0
	err = Dump(3, "routes", func() error { calls++; return unix.EPERM })
	if !errors.Is(err, unix.EPERM) || calls != 1 {
		t.Errorf("other error: err %v after %d calls", err, calls)
	}
}

// fakeLinks is a LinkDeleter over a set of link names; del fails for the names in busy.
type fakeLinks struct {
	links   map[string]bool
	busy    map[string]bool
	deleted []string
}

func (f *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	if !f.links[name] {
		return nil, netlink.LinkNotFoundError{}
	}
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}, nil
}

func (f *fakeLinks) LinkDel(l netlink.Link) error {
	name := l.Attrs().Name
	if f.busy[name] {
		return unix.EBUSY
	}
	delete(f.links, name)
	f.deleted = append(f.deleted, name)
	return nil
}

func TestDeleteLinks(t *testing.T) {
	f := &fakeLinks{links: map[string]bool{"flannel.1": true, "flannel0": true, "stuck": true}, busy: map[string]bool{"stuck": true}}
	err := DeleteLinks(f, []string{"flannel.1", "gone", "stuck", "flannel0"})
	if fmt.Sprint(f.deleted) != "[flannel.1 flannel0]" {
		t.Errorf("deleted %v, want flannel.1 and flannel0", f.deleted)
	}
	if err == nil || !errors.Is(err, unix.EBUSY) || err.Error() != "remove device stuck: device or resource busy" {
		t.Errorf("err %v, want only the busy link's failure", err)
	}
	if err := DeleteLinks(f, []string{"gone"}); err != nil {
		t.Errorf("a missing link: %v", err)
	}
}
