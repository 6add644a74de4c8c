package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// OutsideIP is the address of the outside host (AddOutsideHost) on the lab bridge br0;
// OutsideIPv6 its IPv6 address in a lab with Options.IPv6.
var (
	OutsideIP   = netip.MustParseAddr("192.0.2.200")
	OutsideIPv6 = netip.MustParseAddr("2001:db8::200")
)

// OutsideNS is the namespace of the outside host: "<name>-n0", which matches the lab's
// node pattern (0 is never a node), so Close and Sweep remove it.
func (l *Lab) OutsideNS() string { return l.opts.Name + "-n0" }

// AddOutsideHost creates a host outside the cluster: a namespace on br0 with OutsideIP/24
// (and OutsideIPv6/64 with Options.IPv6) and no default route, so a pod's packet that is
// not masqueraded reaches it but gets no reply. It returns the namespace name.
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

// ListenPacket opens a packet socket (e.g. "udp4", "192.0.2.200:5000") inside the named
// namespace; the socket keeps that namespace and can be used from any goroutine.
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
