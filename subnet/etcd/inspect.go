package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/pkg/connerr"
	"github.com/flannel-go/flannel/subnet"
)

// Read-only inspection for diagnose and leases: nothing here writes or needs an acquired lease.

// Endpoints are the configured endpoints, without user information.
func (m *Manager) Endpoints() []string { return append([]string(nil), m.cfg.Endpoints...) }

// Prefix is the key prefix.
func (m *Manager) Prefix() string { return m.cfg.Prefix }

// EndpointStatus is what one endpoint says of itself.
type EndpointStatus struct {
	Version  string
	MemberID uint64
	Leader   uint64 // 0: the member knows no leader
	DBSize   int64
	Errors   []string // alarms and raft errors the member reports
}

// Status asks one of Endpoints for its status: healthy when it answers, has a leader, no errors.
func (m *Manager) Status(ctx context.Context, endpoint string) (EndpointStatus, error) {
	cli, err := m.client()
	if err != nil {
		return EndpointStatus{}, err
	}
	resp, err := cli.Status(ctx, endpoint)
	if err != nil {
		return EndpointStatus{}, m.explainCall(ctx, err, []string{endpoint})
	}
	st := EndpointStatus{Version: resp.Version, MemberID: resp.Header.GetMemberId(), Leader: resp.Leader,
		DBSize: resp.DbSize, Errors: resp.Errors}
	return st, nil
}

// ErrNoV2 means the etcd server does not serve the v2 API (3.4 needs --enable-v2; 3.6 has none).
var ErrNoV2 = errors.New("etcd does not serve the v2 API")

const maxV2Response = 1 << 20

// V2ConfigText reads <prefix>/config through the v2 API, where ETCDCTL_API=2 writes land.
func (m *Manager) V2ConfigText(ctx context.Context) (text string, found bool, err error) {
	var errs []error
	for _, ep := range m.cfg.Endpoints {
		text, found, err := m.v2Get(ctx, ep, m.configKey)
		if err == nil || errors.Is(err, ErrNoV2) {
			return text, found, err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return "", false, errors.Join(errs...)
}

func (m *Manager) v2Get(ctx context.Context, endpoint, key string) (string, bool, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false, fmt.Errorf("%s: the v2 API is asked over http(s) only", endpoint)
	}
	u.Path = "/v2/keys" + key
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", false, err
	}
	if m.cfg.Username != "" && m.cfg.Password != "" {
		req.SetBasicAuth(m.cfg.Username, m.cfg.Password)
	}
	tr := &http.Transport{TLSClientConfig: m.tls, Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", false, &connerr.Error{Endpoint: endpoint, Cause: connerr.Classify(err), Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxV2Response))
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", endpoint, err)
	}
	var v2 struct {
		ErrorCode *int   `json:"errorCode"`
		Message   string `json:"message"`
		Node      struct {
			Value *string `json:"value"`
			Dir   bool    `json:"dir"`
		} `json:"node"`
	}
	jsonErr := json.Unmarshal(body, &v2)
	switch {
	case resp.StatusCode == http.StatusNotFound && jsonErr != nil:
		// Not a v2 answer: the server has no such API (its mux says "404 page not found").
		return "", false, fmt.Errorf("%w (%s answers %s to /v2/keys)", ErrNoV2, endpoint, resp.Status)
	case jsonErr != nil:
		return "", false, fmt.Errorf("%s: %s to /v2/keys", endpoint, resp.Status)
	case v2.ErrorCode != nil && *v2.ErrorCode == 100: // key not found
		return "", false, nil
	case v2.ErrorCode != nil:
		return "", false, fmt.Errorf("%s: v2 API error %d: %s", endpoint, *v2.ErrorCode, v2.Message)
	case v2.Node.Dir || v2.Node.Value == nil:
		return "", false, fmt.Errorf("%s: %s is a v2 directory", endpoint, key)
	}
	return *v2.Node.Value, true, nil
}

// Listed is one subnet key as listed.
type Listed struct {
	Name        string // the key below <prefix>/subnets/
	Reservation bool   // no etcd lease: never expires
	// Candidate has the key's create and mod revisions as Origin.Seniority and Version.
	subnet.Candidate
}

// List lists the subnet keys, without their expirations (Expiration reads one).
func (m *Manager) List(ctx context.Context) ([]Listed, error) {
	cli, err := m.client()
	if err != nil {
		return nil, err
	}
	var out []Listed
	_, err = m.scan(ctx, cli, func(n int) { out = make([]Listed, 0, n) }, func(e *entry) {
		l := Listed{Name: strings.TrimPrefix(e.name(), m.subnetsDir), Reservation: e.etcdLease == 0, Candidate: e.c}
		l.Origin.Name = l.Name
		l.Lease.Attrs.BackendData = append([]byte(nil), l.Lease.Attrs.BackendData...)
		l.Lease.Attrs.BackendV6Data = append([]byte(nil), l.Lease.Attrs.BackendV6Data...)
		out = append(out, l)
	})
	if err != nil {
		return nil, m.explain(ctx, err)
	}
	return out, nil
}

// Expiration is when the subnet key name's etcd lease ends (zero for a reservation).
func (m *Manager) Expiration(ctx context.Context, name string) (time.Time, error) {
	cli, err := m.client()
	if err != nil {
		return time.Time{}, err
	}
	key := m.subnetsDir + name
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading %s: %w", key, m.explain(ctx, err))
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, fmt.Errorf("%s does not exist", key)
	}
	id := resp.Kvs[0].Lease
	if id == 0 {
		return time.Time{}, nil
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(id))
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the etcd lease of %s: %w", key, m.explain(ctx, err))
	}
	if ttl.TTL < 0 {
		return time.Time{}, fmt.Errorf("the etcd lease of %s has expired", key)
	}
	return time.Now().Add(time.Duration(ttl.TTL) * time.Second), nil
}
