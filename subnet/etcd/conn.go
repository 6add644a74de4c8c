package etcd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/flannel-go/flannel/pkg/connerr"
	"github.com/flannel-go/flannel/pkg/observe"
)

// dial is the etcd client's dialer, reporting each failure (connectFailed): the client
// reconnects silently, so a call without a connection would just hit its deadline.
func (m *Manager) dial(ctx context.Context, addr string) (net.Conn, error) {
	network, address := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, address = "unix", p
	} else if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", p
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil && ctx.Err() != context.Canceled {
		m.handshake.set(nil) // this attempt did not get as far as TLS
		m.connectFailed(m.endpointOf(addr), err)
	}
	return conn, err
}

// connectFailed reports a failed dial or handshake (DatastoreError Connect) and keeps it.
func (m *Manager) connectFailed(endpoint string, cause error) {
	err := fmt.Errorf("connecting to etcd: %w", &connerr.Error{Endpoint: endpoint, Cause: connerr.Classify(cause), Err: cause})
	m.connMu.Lock()
	m.connErr = err
	m.connMu.Unlock()
	m.observer().DatastoreError(observe.Connect, err)
}

func (m *Manager) endpointOf(addr string) string {
	for _, ep := range m.cfg.Endpoints {
		if dialAddr(ep) == addr {
			return ep
		}
	}
	return addr
}

// dialAddr is the address the etcd client dials for an endpoint: "unix:///abs" for
// unix(s):///abs, "unix:rel" for unix(s)://rel and unix(s):rel, host:port of an http(s) URL.
func dialAddr(ep string) string {
	for _, scheme := range []string{"unixs:", "unix:"} {
		if rest, ok := strings.CutPrefix(ep, scheme); ok {
			if strings.HasPrefix(rest, "///") {
				return "unix://" + rest[2:]
			}
			return "unix:" + strings.TrimPrefix(rest, "//")
		}
	}
	if u, err := url.Parse(ep); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return u.Host
	}
	return ep
}

// watchConnection reports the lease watch broken once per connection outage, live when ready again.
func (m *Manager) watchConnection(ctx context.Context, cli *clientv3.Client) {
	conn := cli.ActiveConnection()
	if conn == nil {
		return
	}
	left, failed := false, false
	for s := conn.GetState(); ; s = conn.GetState() {
		switch s {
		case connectivity.Ready:
			m.connMu.Lock()
			m.connErr = nil // older failures say nothing about the next outage
			m.connMu.Unlock()
			if left {
				left, failed = false, false
				m.observer().WatchLive(observe.LeasesWatch)
			}
		case connectivity.Idle, connectivity.Connecting:
			left = true
		case connectivity.TransientFailure:
			left = true
			if !failed {
				failed = true
				m.connMu.Lock()
				err := m.connErr
				m.connMu.Unlock()
				if err == nil {
					// The connection failed before any new attempt did: say why the endpoints cannot be used.
					pctx, cancel := context.WithTimeout(ctx, probeTimeout)
					err = fmt.Errorf("connecting to etcd: %s", m.diagnose(pctx, m.cfg.Endpoints))
					cancel()
					if ctx.Err() != nil {
						return
					}
				}
				m.observer().DatastoreError(observe.Watch, err)
				m.observer().WatchRestarted(observe.LeasesWatch, err)
			}
		case connectivity.Shutdown:
			return
		}
		if !conn.WaitForStateChange(ctx, s) {
			return
		}
	}
}
