package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// OutsideIP and OutsideIPv6 are the outside host's addresses on br0 (AddOutsideHost).
var (
	OutsideIP   = netip.MustParseAddr("192.0.2.200")
	OutsideIPv6 = netip.MustParseAddr("2001:db8::200")
)

// OutsideNS is the outside host's namespace, named like node 0 so Close and Sweep remove it.
func (l *Lab) OutsideNS() string { return l.opts.Name + "-n0" }

// AddOutsideHost creates a host on br0 with no default route (so a pod's unmasqueraded
// packet gets no reply) and returns its namespace.
func (l *Lab) AddOutsideHost() (string, error) {
	ctx := context.Background()
	ns := l.OutsideNS()
	if err := deleteNamespaces(ctx, []string{ns}); err != nil {
		return "", err
	}
	if err := addNamespace(ctx, ns); err != nil {
		return "", err
	}
	if err := l.prepareIPv6(ctx, ns); err != nil {
		return "", fmt.Errorf("lab: outside host: %w", err)
	}
	steps := []ipStep{
		{ns, []string{"link", "set", "lo", "up"}},
		{ns, []string{"link", "add", "eth0", "type", "veth", "peer", "name", "out0", "netns", l.SwitchNS()}},
		{l.SwitchNS(), []string{"link", "set", "out0", "master", "br0"}},
		{l.SwitchNS(), []string{"link", "set", "out0", "up"}},
		{ns, []string{"addr", "add", OutsideIP.String() + "/24", "dev", "eth0"}},
		{ns, []string{"link", "set", "eth0", "up"}},
	}
	if l.opts.IPv6 {
		steps = append(steps, ipStep{ns, addr6(OutsideIPv6, UnderlayIPv6, "eth0")})
	}
	if err := runIPSteps(ctx, steps); err != nil {
		return "", fmt.Errorf("lab: outside host: %w", err)
	}
	return ns, nil
}

// ListenPacket opens a packet socket in ns, usable from any goroutine.
func ListenPacket(ns, network, addr string) (net.PacketConn, error) {
	type result struct {
		c   net.PacketConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := listenInNetns(ns, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// listenInNetns must run on its own goroutine (see inNetns).
func listenInNetns(ns, network, addr string) (net.PacketConn, error) {
	c, err := inNetns(ns, func() (net.PacketConn, error) { return net.ListenPacket(network, addr) })
	if err != nil {
		return nil, fmt.Errorf("lab: listen %s in netns %s: %w", addr, ns, err)
	}
	return c, nil
}
