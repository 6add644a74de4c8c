package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// LeaseReport is the network's lease list as `flanneld leases` shows it.
type LeaseReport struct {
	SchemaVersion int    `json:"schemaVersion"`
	Datastore     string `json:"datastore"`
	Network       string `json:"network"`
	// Note says what could not be read (if the config, no lease is judged).
	Note   string     `json:"note,omitempty"`
	Leases []LeaseRow `json:"leases"`
}

// LeaseRow is one lease.
type LeaseRow struct {
	Name        string       `json:"name"`
	Subnet      netip.Prefix `json:"subnet,omitzero"`
	IPv6Subnet  netip.Prefix `json:"ipv6Subnet,omitzero"`
	PublicIP    netip.Addr   `json:"publicIP,omitzero"`
	PublicIPv6  netip.Addr   `json:"publicIPv6,omitzero"`
	Backend     string       `json:"backend,omitempty"`
	VtepMAC     string       `json:"vtepMAC,omitempty"`
	Expires     time.Time    `json:"expires,omitzero"` // etcd leases only
	Reservation bool         `json:"reservation,omitempty"`
	Status      string       `json:"status,omitempty"` // a Lease* constant; "" when not judged
	// Reason is the label of flannel_leases_rejected_total; Detail says it in words.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// The lease statuses.
const (
	LeaseOwn        = "own"
	LeaseAdmitted   = "admitted"
	LeaseRejected   = "rejected"
	LeaseUnreadable = "unreadable"
)

const expiryWorkers = 16 // concurrent etcd expiry reads

// ListLeases reads the config and leases, marks this node's, judges the others by
// Deps.Admission and, in etcd mode, reads each expiry.
func ListLeases(ctx context.Context, s *State) (*LeaseReport, error) {
	r := &LeaseReport{SchemaVersion: SchemaVersion, Datastore: s.datastore(), Network: s.network(), Leases: []LeaseRow{}}
	if err := s.loadConfig(ctx); err != nil {
		return nil, err
	}
	if s.cfg == nil {
		return nil, errors.New("no usable network config: run flanneld diagnose")
	}
	if s.Opts.Kube {
		cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
		name, err := s.Deps.Kube.NodeName(cctx)
		cancel()
		if err == nil {
			s.nodeName = name
		} else {
			r.Note = "this node's name is unknown (" + oneLine(err) + "): its lease is not marked"
		}
	} else {
		_, _ = s.lookupIface()
	}
	if err := s.readLeases(ctx); err != nil {
		return nil, err
	}
	exp := make([]time.Time, len(s.leases))
	if !s.Opts.Kube {
		s.expirations(ctx, exp)
	}
	for i, l := range s.leases {
		row := LeaseRow{Name: l.Name, Subnet: l.Lease.Subnet, IPv6Subnet: l.Lease.IPv6Subnet, PublicIP: l.Lease.Attrs.PublicIP,
			PublicIPv6: l.Lease.Attrs.PublicIPv6, Backend: l.Lease.Attrs.BackendType, VtepMAC: vtepMAC(l.Lease.Attrs.BackendData),
			Expires: exp[i], Reservation: l.Reservation}
		switch {
		case l.Own && l.Origin.Defect != nil:
			row.Status = LeaseUnreadable
			row.Reason, row.Detail = reasonDetail(l.Origin.Defect)
		case l.Own:
			row.Status = LeaseOwn
		case l.Rejected != nil:
			row.Status = LeaseRejected
			row.Reason, row.Detail = reasonDetail(l.Rejected)
		case l.Origin.Defect != nil:
			row.Status = LeaseUnreadable
			row.Reason, row.Detail = reasonDetail(l.Origin.Defect)
		case s.Deps.Admission != nil:
			row.Status = LeaseAdmitted
		}
		r.Leases = append(r.Leases, row)
	}
	return r, nil
}

func (s *State) loadConfig(ctx context.Context) error {
	var text string
	if s.Opts.Kube {
		if s.Deps.Kube == nil {
			return errors.New("no Kubernetes client")
		}
		_, t, err := s.Deps.Kube.NetConfig()
		if err != nil {
			return err
		}
		text = t
	} else {
		if s.Deps.Etcd == nil {
			return errors.New("no etcd client")
		}
		cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
		t, found, err := s.Deps.Etcd.Config(cctx)
		cancel()
		switch {
		case err != nil:
			return err
		case !found:
			return fmt.Errorf("no network config at %s/config", s.Opts.EtcdPrefix)
		}
		text = t
	}
	cfg, err := parseNetConfig(s.Opts.Kube, text)
	if err != nil {
		return fmt.Errorf("the network config: %s", oneLine(err))
	}
	s.cfg = cfg
	return nil
}

// expirations fills exp with the etcd leases' expiries; an unreadable one stays zero.
func (s *State) expirations(ctx context.Context, exp []time.Time) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(expiryWorkers, len(s.leases)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
				exp[i], _ = s.Deps.Etcd.Expiration(cctx, s.leases[i].Name)
				cancel()
			}
		}()
	}
	for i, l := range s.leases {
		if !l.Reservation {
			work <- i
		}
	}
	close(work)
	wg.Wait()
}

func vtepMAC(data json.RawMessage) string {
	var d struct{ VtepMAC string }
	if json.Unmarshal(data, &d) != nil {
		return ""
	}
	return d.VtepMAC
}

// WriteJSON writes the report as one indented JSON document.
func (r *LeaseReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the leases as a table, one line each.
func (r *LeaseReport) WriteText(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	name := "KEY"
	if r.Datastore == "kube" {
		name = "NODE"
	}
	cols := []string{name, "SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC"}
	if r.Datastore == "etcd" {
		cols = append(cols, "EXPIRES")
	}
	cols = append(cols, "STATUS")
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, l := range r.Leases {
		row := []string{l.Name, joinValid(l.Subnet, l.IPv6Subnet), joinValid(l.PublicIP, l.PublicIPv6), dash(l.Backend), dash(l.VtepMAC)}
		if r.Datastore == "etcd" {
			switch {
			case l.Reservation:
				row = append(row, "never (reservation)")
			case l.Expires.IsZero():
				row = append(row, "-")
			default:
				row = append(row, "in "+l.Expires.Sub(now).Round(time.Minute).String())
			}
		}
		st := dash(l.Status)
		for _, s := range []string{l.Reason, l.Detail} {
			if s != "" {
				st += ": " + s
			}
		}
		row = append(row, st)
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Note != "" {
		_, err := fmt.Fprintln(w, "note: "+r.Note)
		return err
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// joinValid joins the valid values ("10.5.1.0/24,2001:db8:1::/64"), "-" when none is.
func joinValid[T interface {
	IsValid() bool
	String() string
}](a, b T) string {
	var out []string
	for _, v := range []T{a, b} {
		if v.IsValid() {
			out = append(out, v.String())
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}
