package kube

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/flannel-go/flannel/subnet"
)

func TestNewAnnotations(t *testing.T) {
	tests := []struct {
		prefix, backendType, err string
	}{
		{"flannel.alpha.coreos.com", "flannel.alpha.coreos.com/backend-type", ""},
		{"flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/backend-type", ""},
		{"flannel.alpha.coreos.com/prefix", "flannel.alpha.coreos.com/prefix-backend-type", ""},
		{"flannel.alpha.coreos.com/prefix-", "flannel.alpha.coreos.com/prefix-backend-type", ""},
		{"example.org/a_b", "example.org/a_b-backend-type", ""},
		{"org", "", "prefix must be in a format"},
		{"org.COM", "", "prefix must be in a format"},
		{"a.b/c/d", "", "at most single slash"},
		{"", "", "prefix must be in a format"},
		{"/x", "", "prefix must be in a format"},
	}
	for _, tt := range tests {
		a, err := NewAnnotations(tt.prefix)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.prefix, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.prefix, err)
			continue
		}
		if a.BackendType != tt.backendType {
			t.Errorf("%q: backend-type key %q, want %q", tt.prefix, a.BackendType, tt.backendType)
		}
		if !strings.HasPrefix(a.NodePublicIPv6, a.Prefix()) || !strings.HasSuffix(a.NodePublicIPv6, "node-public-ipv6") {
			t.Errorf("%q: node-public-ipv6 key %q", tt.prefix, a.NodePublicIPv6)
		}
	}
}

func FuzzNewAnnotations(f *testing.F) {
	for _, s := range []string{"flannel.alpha.coreos.com", "a.b/c", "a.b/c-", "org", "x/y/z", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		a, err := NewAnnotations(prefix)
		if err != nil {
			return
		}
		if !annotationPrefixRE.MatchString(a.Prefix()) || !strings.HasPrefix(a.Prefix(), prefix) {
			t.Fatalf("%q normalised to %q", prefix, a.Prefix())
		}
		if a.SubnetKubeManaged != a.Prefix()+"kube-subnet-manager" {
			t.Fatalf("key %q", a.SubnetKubeManaged)
		}
	})
}

func node(name string, cidrs []string, ann map[string]string) *apiNode {
	n := &apiNode{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	if len(cidrs) > 1 {
		n.Spec.PodCIDRs = cidrs
	}
	return n
}

func TestPodCIDRs(t *testing.T) {
	tests := []struct {
		name   string
		n      *apiNode
		v4, v6 string
		err    string
	}{
		{"v4", node("a", []string{"10.244.1.0/24"}, nil), "10.244.1.0/24", "", ""},
		{"dual", node("a", []string{"10.244.1.0/24", "fd00:1::/64"}, nil), "10.244.1.0/24", "fd00:1::/64", ""},
		{"dual v6 first", node("a", []string{"fd00:1::/64", "10.244.1.0/24"}, nil), "10.244.1.0/24", "fd00:1::/64", ""},
		{"unmasked", node("a", []string{"10.244.1.7/24"}, nil), "10.244.1.0/24", "", ""},
		{"none", node("a", nil, nil), "", "", ""},
		{"three", node("a", []string{"10.0.0.0/24", "fd00::/64", "10.1.0.0/24"}, nil), "", "", `node "a" pod cidrs should be`},
		{"garbage", node("a", []string{"nope"}, nil), "", "", "invalid pod CIDR"},
	}
	for _, tt := range tests {
		v4, v6, err := podCIDRs(tt.n)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if str(v4) != tt.v4 || str(v6) != tt.v6 {
			t.Errorf("%s: got %v %v, want %s %s", tt.name, v4, v6, tt.v4, tt.v6)
		}
	}
}

func str(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

var testAnn, _ = NewAnnotations(DefaultAnnotationPrefix)

func peerAnn(ip, mac string) map[string]string {
	return map[string]string{
		testAnn.SubnetKubeManaged: "true",
		testAnn.BackendType:       "vxlan",
		testAnn.BackendData:       `{"VNI":1,"VtepMAC":"` + mac + `"}`,
		testAnn.PublicIP:          ip,
		"unrelated":               "x",
	}
}

func TestNodeCandidate(t *testing.T) {
	v4 := &subnet.Config{EnableIPv4: true}
	dual := &subnet.Config{EnableIPv4: true, EnableIPv6: true}
	dualAnn := peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01")
	dualAnn[testAnn.PublicIPv6] = "2001:db8::11"
	dualAnn[testAnn.BackendV6Data] = `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}`
	big := peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01")
	big[testAnn.BackendData] = `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01","x":"` + strings.Repeat("x", subnet.MaxValueSize) + `"}`
	garbage := peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01")
	garbage[testAnn.BackendData] = `{"VNI":1,`
	tests := []struct {
		name   string
		n      *apiNode
		cfg    *subnet.Config
		key    string
		reason subnet.Reason
		detail string
	}{
		{"peer", node("a", []string{"10.244.1.0/24"}, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01")), v4, "10.244.1.0-24", "", ""},
		{"bad public ip", node("a", []string{"10.244.1.0/24"}, peerAnn("nope", "aa:bb:cc:dd:ee:01")), v4, "10.244.1.0-24", subnet.BadPublicIP, `public IPv4 address annotation "nope"`},
		{"v6 public ip in v4", node("a", []string{"10.244.1.0/24"}, peerAnn("2001:db8::1", "aa:bb:cc:dd:ee:01")), v4, "10.244.1.0-24", subnet.BadPublicIP, "2001:db8::1"},
		{"no pod cidr", node("a", nil, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01")), v4, "0.0.0.0-0", subnet.OutsideNetwork, "no IPv4 pod CIDR"},
		{"bad pod cidr", node("a", []string{"10.244.1.0/33"}, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01")), v4, "0.0.0.0-0", subnet.OutsideNetwork, "invalid pod CIDR"},
		{"garbage backend data", node("a", []string{"10.244.1.0/24"}, garbage), v4, "10.244.1.0-24", subnet.BadJSON, "not JSON"},
		{"too large", node("a", []string{"10.244.1.0/24"}, big), v4, "0.0.0.0-0", subnet.TooLarge, "larger than 4096 bytes"},
		{"dual", node("a", []string{"10.244.1.0/24", "fd00:1::/64"}, dualAnn), dual, "10.244.1.0-24&fd00:1::-64", "", ""},
		{"dual without v6 ip", node("a", []string{"10.244.1.0/24", "fd00:1::/64"}, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01")), dual, "10.244.1.0-24&fd00:1::-64", subnet.BadPublicIP, "IPv6"},
	}
	for _, tt := range tests {
		tt.n.CreationTimestamp = metav1.Unix(1700000000, 0)
		tt.n.ResourceVersion = "42"
		c := nodeCandidate(tt.n, testAnn, tt.cfg)
		if c.Origin.Name != "a" || c.Origin.Seniority != 1700000000 || c.Origin.Version != 42 {
			t.Errorf("%s: origin %+v", tt.name, c.Origin)
		}
		if c.Lease.Key() != tt.key {
			t.Errorf("%s: key %s, want %s", tt.name, c.Lease.Key(), tt.key)
		}
		if tt.reason == "" {
			if c.Origin.Defect != nil || c.Lease.Attrs.BackendType != "vxlan" || len(c.Lease.Attrs.BackendData) == 0 {
				t.Errorf("%s: candidate %+v", tt.name, c)
			}
			continue
		}
		if d := c.Origin.Defect; d == nil || d.Reason != tt.reason || !strings.Contains(d.String(), tt.detail) {
			t.Errorf("%s: defect %v, want %s with %q", tt.name, d, tt.reason, tt.detail)
		}
	}
}

// A pod CIDR handed from a deleted node to a new one in one batch ends as the new node's
// lease, whatever the map order (many tries).
func TestLeaseWatchApplyHandOver(t *testing.T) {
	x := node("x", []string{"10.244.1.0/24"}, peerAnn("192.0.2.1", "0e:00:00:00:00:01"))
	y := node("y", []string{"10.244.1.0/24"}, peerAnn("192.0.2.2", "0e:00:00:00:00:02"))
	for try := range 100 {
		w := leaseWatch{cfg: &subnet.Config{EnableIPv4: true}, nodes: map[string]*peerNode{}}
		w.apply(slimAll(map[string]*apiNode{"x": x}))
		evs := w.apply(slimAll(map[string]*apiNode{"x": nil, "y": y}))
		if len(evs) != 2 || evs[len(evs)-1].Type != subnet.EventAdded || evs[len(evs)-1].Lease.Attrs.PublicIP.String() != "192.0.2.2" {
			t.Fatalf("try %d: events %+v; the last must add y's lease", try, evs)
		}
	}
}

func TestLeaseWatchApply(t *testing.T) {
	w := leaseWatch{cfg: &subnet.Config{EnableIPv4: true}, self: "me", nodes: map[string]*peerNode{}}
	a := node("a", []string{"10.244.1.0/24"}, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01"))
	b := node("b", []string{"10.244.2.0/24"}, peerAnn("192.0.2.12", "aa:bb:cc:dd:ee:02"))
	plain := node("c", []string{"10.244.3.0/24"}, nil)
	type ev struct {
		typ subnet.EventType
		key string
	}
	steps := []struct {
		name  string
		nodes map[string]*apiNode
		want  []ev
	}{
		{"initial", map[string]*apiNode{"a": a, "b": b, "c": plain}, []ev{{subnet.EventAdded, "10.244.1.0-24"}, {subnet.EventAdded, "10.244.2.0-24"}}},
		{"same again", map[string]*apiNode{"a": copyNode(a)}, nil},
		{"unrelated annotation", map[string]*apiNode{"a": withAnn(a, "other", "1")}, nil},
		{"new mac", map[string]*apiNode{"a": node("a", []string{"10.244.1.0/24"}, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:09"))}, []ev{{subnet.EventAdded, "10.244.1.0-24"}}},
		{"pod cidr moved", map[string]*apiNode{"b": node("b", []string{"10.244.7.0/24"}, peerAnn("192.0.2.12", "aa:bb:cc:dd:ee:02"))}, []ev{{subnet.EventRemoved, "10.244.2.0-24"}, {subnet.EventAdded, "10.244.7.0-24"}}},
		{"annotation dropped", map[string]*apiNode{"a": node("a", []string{"10.244.1.0/24"}, nil)}, []ev{{subnet.EventRemoved, "10.244.1.0-24"}}},
		{"deleted", map[string]*apiNode{"b": nil, "c": nil}, []ev{{subnet.EventRemoved, "10.244.7.0-24"}}},
		{"deleted twice", map[string]*apiNode{"b": nil}, nil},
		// a gone and its pod CIDR given to a new node d in one batch: d's lease must win
		{"re-added", map[string]*apiNode{"a": node("a", []string{"10.244.1.0/24"}, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:09"))}, []ev{{subnet.EventAdded, "10.244.1.0-24"}}},
		{"cidr handed over", map[string]*apiNode{"a": nil, "d": node("d", []string{"10.244.1.0/24"}, peerAnn("192.0.2.14", "aa:bb:cc:dd:ee:04"))},
			[]ev{{subnet.EventRemoved, "10.244.1.0-24"}, {subnet.EventAdded, "10.244.1.0-24"}}},
		{"new node deleted", map[string]*apiNode{"d": nil}, []ev{{subnet.EventRemoved, "10.244.1.0-24"}}},
	}
	for _, s := range steps {
		got := w.apply(slimAll(s.nodes))
		var gotEv []ev
		for _, e := range got {
			gotEv = append(gotEv, ev{e.Type, e.Lease.Key()})
		}
		if len(gotEv) != len(s.want) {
			t.Fatalf("%s: events %v, want %v", s.name, gotEv, s.want)
		}
		for _, w := range s.want { // the order across nodes is not defined; within one node it is
			found := false
			for _, g := range gotEv {
				found = found || g == w
			}
			if !found {
				t.Fatalf("%s: events %v, want %v", s.name, gotEv, s.want)
			}
		}
		for i := 1; i < len(gotEv); i++ { // every removal before every addition
			if gotEv[i].typ == subnet.EventRemoved && gotEv[i-1].typ == subnet.EventAdded {
				t.Fatalf("%s: a removal after an addition: %v", s.name, gotEv)
			}
		}
	}
	if len(w.snapshot()) != 0 {
		t.Fatalf("leases left: %v", w.snapshot())
	}

	// Quiet (before the first snapshot): the leases are folded in, no events are built.
	w.quiet = true
	if ev := w.apply(slimAll(map[string]*apiNode{"a": a, "b": b, "c": plain})); len(ev) != 0 {
		t.Fatalf("quiet apply returned events %v", ev)
	}
	var keys []string
	for _, c := range w.snapshot() {
		keys = append(keys, c.Lease.Key())
	}
	if strings.Join(sorted(keys), " ") != "10.244.1.0-24 10.244.2.0-24" {
		t.Fatalf("leases after a quiet apply: %v", keys)
	}
	w.quiet = false
	if ev := w.apply(slimAll(map[string]*apiNode{"a": nil})); len(ev) != 1 || ev[0].Type != subnet.EventRemoved {
		t.Fatalf("events after the quiet apply: %v", ev)
	}
}

func slimAll(nodes map[string]*apiNode) map[string]*peerNode {
	m := &Manager{ann: testAnn}
	out := map[string]*peerNode{}
	for k, n := range nodes {
		if n == nil {
			out[k] = nil
			continue
		}
		out[k] = m.slim(n)
	}
	return out
}

func copyNode(n *apiNode) *apiNode {
	c := *n
	c.Annotations = maps.Clone(n.Annotations)
	c.Spec.PodCIDRs = append([]string(nil), n.Spec.PodCIDRs...)
	c.Status.Conditions = append([]nodeCondition(nil), n.Status.Conditions...)
	return &c
}

func withAnn(n *apiNode, k, v string) *apiNode {
	c := copyNode(n)
	c.Annotations[k] = v
	return c
}

func TestSlimNode(t *testing.T) {
	m := &Manager{ann: testAnn, condChanged: make(chan struct{}, 1)}
	n := node("a", []string{"10.244.1.0/24", "fd00::/64"}, peerAnn("192.0.2.11", "aa:bb:cc:dd:ee:01"))
	n.Status.Conditions = []nodeCondition{{Type: "Ready", Status: "True"}}
	s := m.slimNode(n)
	kept := 0
	for _, v := range s.LeaseAnn {
		if v != "" {
			kept++
		}
	}
	if s.Name != "a" || kept != 4 || !s.managed() || len(s.PodCIDRs) != 2 {
		t.Fatalf("slim node %+v", s)
	}
	if s.LeaseAnn[leaseKeyPublicIP] != "192.0.2.11" || s.LeaseAnn[leaseKeyBackendType] != "vxlan" || s.LeaseAnn[leaseKeyPublicIPv6] != "" {
		t.Fatalf("lease annotations of the slim node: %q", s.LeaseAnn)
	}
	c := peerCandidate(s, &subnet.Config{EnableIPv4: true})
	if c.Origin.Defect != nil || c.Lease.Key() != "10.244.1.0-24" || c.Lease.Attrs.PublicIP.String() != "192.0.2.11" {
		t.Fatalf("slim node's candidate %+v", c)
	}
	// Lease annotations larger than the limit together: none kept but the marker.
	big := withAnn(n, testAnn.BackendV6Data, strings.Repeat("x", subnet.MaxValueSize))
	if s := m.slim(big); !s.TooLarge || !s.managed() || s.LeaseAnn[leaseKeyPublicIP] != "" || s.LeaseAnn[leaseKeyBackendV6Data] != "" {
		t.Fatalf("slim node of an oversized lease %+v", s)
	}
	// Only spec.podCIDR set (older clusters): kept as the list.
	old := node("b", []string{"10.244.2.0/24"}, peerAnn("192.0.2.12", "aa:bb:cc:dd:ee:02"))
	if p := m.slim(old); len(p.PodCIDRs) != 1 || p.PodCIDRs[0] != "10.244.2.0/24" {
		t.Fatalf("podCIDR not kept: %+v", p)
	}
}

// The watch tells KeepLease when the own node's NetworkUnavailable condition is not False.
func TestSlimNodeSignalsCondition(t *testing.T) {
	tests := []struct {
		name   string
		set    bool
		node   string
		conds  []nodeCondition
		signal bool
	}{
		{"false", true, "own", []nodeCondition{{Type: "NetworkUnavailable", Status: "False"}}, false},
		{"true", true, "own", []nodeCondition{{Type: "NetworkUnavailable", Status: "True"}}, true},
		{"missing", true, "own", []nodeCondition{{Type: "Ready", Status: "True"}}, true},
		{"other node", true, "peer", []nodeCondition{{Type: "NetworkUnavailable", Status: "True"}}, false},
		{"not asked to", false, "own", []nodeCondition{{Type: "NetworkUnavailable", Status: "True"}}, false},
	}
	for _, tt := range tests {
		m := &Manager{ann: testAnn, nodeName: "own", cfg: Config{SetNodeNetworkUnavailable: tt.set}, condChanged: make(chan struct{}, 1)}
		n := node(tt.node, []string{"10.244.1.0/24"}, nil)
		n.Status.Conditions = tt.conds
		m.slimNode(n)
		got := len(m.condChanged) == 1
		if got != tt.signal {
			t.Errorf("%s: signalled %v, want %v", tt.name, got, tt.signal)
		}
	}
}

func TestDesiredAnnotations(t *testing.T) {
	m := &Manager{ann: testAnn}
	attrs := &subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.11"), BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)}
	cfg := &subnet.Config{EnableIPv4: true}
	n := node("a", []string{"10.244.1.0/24"}, nil)
	want := m.desiredAnnotations(n, cfg, attrs)
	if want[testAnn.PublicIP] != "192.0.2.11" || want[testAnn.SubnetKubeManaged] != "true" || want[testAnn.BackendType] != "vxlan" ||
		want[testAnn.BackendData] != string(attrs.BackendData) {
		t.Fatalf("desired %v", want)
	}
	if _, ok := want[testAnn.PublicIPv6]; ok {
		t.Fatal("v6 annotation without v6")
	}
	if len(annotationDiff(n.Annotations, want)) == 0 || len(annotationDiff(want, want)) != 0 {
		t.Fatal("annotationDiff()")
	}
	have := maps.Clone(want)
	have[testAnn.PublicIP] = "192.0.2.99"
	have["other"] = "kept"
	if d := annotationDiff(have, want); len(d) != 1 || d[testAnn.PublicIP] != "192.0.2.11" {
		t.Fatalf("annotationDiff with one changed value = %v", d)
	}
	n.Annotations = map[string]string{testAnn.PublicIPOverwrite: "203.0.113.5"}
	if got := m.desiredAnnotations(n, cfg, attrs)[testAnn.PublicIP]; got != "203.0.113.5" {
		t.Fatalf("overwrite ignored: %q", got)
	}
	// An overwrite the peers would reject is not advertised.
	for _, bad := range []string{"127.0.0.1", "not-an-ip", "2001:db8::1", "224.0.0.1"} {
		n.Annotations = map[string]string{testAnn.PublicIPOverwrite: bad}
		if got := m.desiredAnnotations(n, cfg, attrs)[testAnn.PublicIP]; got != "192.0.2.11" {
			t.Fatalf("overwrite %q: advertised %q, want the detected 192.0.2.11", bad, got)
		}
	}
	hg := &subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.11"), BackendType: "host-gw"}
	if got := m.desiredAnnotations(n, cfg, hg)[testAnn.BackendData]; got != "null" {
		t.Fatalf("host-gw backend-data %q, want null", got)
	}
}

func FuzzNodeCandidate(f *testing.F) {
	f.Add("10.244.1.0/24", "", "true", "192.0.2.11", "", `{"VNI":1}`)
	f.Add("10.244.1.0/24", "fd00::/64", "true", "192.0.2.11", "2001:db8::1", "null")
	f.Add("nope", "", "true", "x", "", "{")
	f.Fuzz(func(t *testing.T, cidr, cidr6, managed, ip, ip6, data string) {
		n := node("a", []string{cidr, cidr6}, map[string]string{
			testAnn.SubnetKubeManaged: managed, testAnn.PublicIP: ip, testAnn.PublicIPv6: ip6,
			testAnn.BackendData: data, testAnn.BackendV6Data: data,
		})
		for _, cfg := range []*subnet.Config{{EnableIPv4: true}, {EnableIPv6: true}, {EnableIPv4: true, EnableIPv6: true}} {
			c := nodeCandidate(n, testAnn, cfg)
			size := len(managed) + len(ip) + len(ip6) + 2*len(data)
			if (size > subnet.MaxValueSize) != (c.Origin.Defect != nil && c.Origin.Defect.Reason == subnet.TooLarge) {
				t.Fatalf("annotations of %d bytes: defect %v", size, c.Origin.Defect)
			}
			if c.Origin.Defect != nil {
				continue
			}
			l := c.Lease
			if cfg.EnableIPv4 && (!l.Subnet.IsValid() || !l.Attrs.PublicIP.Is4()) {
				t.Fatalf("v4 lease without subnet or IP: %+v", l)
			}
			if cfg.EnableIPv6 && (!l.IPv6Subnet.IsValid() || !l.Attrs.PublicIPv6.Is6()) {
				t.Fatalf("v6 lease without subnet or IP: %+v", l)
			}
			if _, err := l.Attrs.MarshalJSON(); err != nil {
				t.Fatalf("lease attrs do not marshal: %v", err)
			}
		}
	})
}

func TestNew(t *testing.T) {
	rc := &rest.Config{Host: "https://192.0.2.253:6443"}
	tests := []struct {
		name string
		cfg  Config
		err  string
	}{
		{"node name", Config{REST: rc, NodeName: "n1"}, ""},
		{"pod", Config{REST: rc, PodName: "p", PodNamespace: "kube-flannel"}, ""},
		{"no identity", Config{REST: rc}, "env variables POD_NAME and POD_NAMESPACE must be set (or NODE_NAME)"},
		{"pod name only", Config{REST: rc, PodName: "p"}, "POD_NAMESPACE must be set"},
		{"bad prefix", Config{REST: rc, NodeName: "n1", AnnotationPrefix: "org"}, "error creating network manager: subnet/kube: prefix must be in a format"},
		{"bad kubeconfig", Config{KubeconfigFile: "/nonexistent/kubeconfig", NodeName: "n1"}, "fail to create kubernetes config"},
		{"bad client config", Config{REST: &rest.Config{Host: "https://192.0.2.253:6443", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("not PEM")}}, NodeName: "n1"}, "unable to initialize client"},
	}
	for _, tt := range tests {
		m, err := New(tt.cfg)
		if tt.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.err)
		}
		if m != nil {
			t.Errorf("%s: manager returned with an error", tt.name)
		}
	}
	m, _ := New(Config{REST: rc, NodeName: "n1"})
	if m.Name() != "Kubernetes Subnet Manager - n1" {
		t.Errorf("Name() = %q", m.Name())
	}
}

func TestPublicIPs(t *testing.T) {
	tests := []struct {
		ann          map[string]string
		flag4, flag6 string
		want4, want6 string
	}{
		{nil, "192.0.2.1", "", "192.0.2.1", ""},
		{map[string]string{testAnn.NodePublicIP: "198.51.100.7"}, "192.0.2.1", "", "198.51.100.7", ""},
		{map[string]string{testAnn.NodePublicIPv6: "2001:db8::7"}, "", "2001:db8::1", "", "2001:db8::7"},
		{map[string]string{testAnn.NodePublicIP: "2001:db8::7", testAnn.NodePublicIPv6: "198.51.100.7"}, "192.0.2.1", "", "192.0.2.1", ""},
		{map[string]string{testAnn.NodePublicIP: "not-an-ip"}, "", "", "", ""},
	}
	for _, tt := range tests {
		m := &Manager{ann: testAnn, own: &apiNode{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: tt.ann}}}
		v4, v6 := m.PublicIPs(tt.flag4, tt.flag6)
		if v4 != tt.want4 || v6 != tt.want6 {
			t.Errorf("%v with flags %q %q: got %q %q, want %q %q", tt.ann, tt.flag4, tt.flag6, v4, v6, tt.want4, tt.want6)
		}
	}
}
