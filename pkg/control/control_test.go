package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/instancelock"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestParseRequest(t *testing.T) {
	tests := []struct {
		line, want, err string
	}{
		{"status\n", "status", ""},
		{"status\r\n", "status", ""},
		{"status", "status", ""},
		{"\n", "", "empty request"},
		{"", "", "empty request"},
		{"STATUS\n", "", `unknown request "STATUS"`},
		{"status \n", "", "unknown request"},
		{"status\n\n", "", "unknown request"},
		{"st\x00atus\n", "", "not printable"},
		{strings.Repeat("a", MaxRequest+1), "", "longer than"},
	}
	for _, tt := range tests {
		r, err := ParseRequest([]byte(tt.line))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseRequest(%q) = %v, %v; want error %q", tt.line, r, err, tt.err)
			}
			continue
		}
		if err != nil || r.Verb != tt.want {
			t.Errorf("ParseRequest(%q) = %v, %v; want %q", tt.line, r, err, tt.want)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"status\n", "status\r\n", "", "\n", "x\n", "status\x00", strings.Repeat("s", MaxRequest)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseRequest(line)
		if err != nil {
			if strings.ContainsFunc(err.Error(), func(r rune) bool { return r == '\n' }) {
				t.Fatalf("error %q spans lines", err)
			}
			return
		}
		again, err := ParseRequest([]byte(r.String() + "\n"))
		if err != nil || again != r {
			t.Fatalf("%q parsed as %v, which reparses as %v, %v", line, r, again, err)
		}
	})
}

func sampleStatus() *Status {
	started := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	lease := func(key, sn, pub string) Lease {
		return Lease{Key: key, Subnet: netip.MustParsePrefix(sn), PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:0b"}`), Expiration: started.Add(24 * time.Hour)}
	}
	own := lease("10.5.11.0-24", "10.5.11.0/24", "192.0.2.11")
	own.IPv6Subnet, own.PublicIPv6 = netip.MustParsePrefix("2001:db8:5:11::/64"), netip.MustParseAddr("2001:db8::11")
	own.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:0c"}`)
	bad := lease("10.5.12.0-25", "10.5.12.0/25", "192.0.2.99")
	return &Status{
		Instance: Instance{PID: 1234, Version: "v0.1.0", Started: started, Socket: "@flannel-go/etcd-prefix:/coreos.com/network",
			Locks: []string{"etcd-prefix:/coreos.com/network", "subnet-file:/run/flannel/subnet.env"}, Datastore: "etcd",
			Phase: PhaseRunning, Network: netip.MustParsePrefix("10.5.0.0/16"), IPv6Network: netip.MustParsePrefix("2001:db8:5::/48"),
			BackendType: "vxlan", Backend: json.RawMessage(`{"Type":"vxlan","VNI":1}`), Devices: []string{"flannel.1", "flannel-v6.1"},
			Claims: &claim.Set{
				Devices: []claim.Device{{Name: "flannel.1", SetBy: "Backend.VNI"}, {Name: "flannel-v6.1", SetBy: "Backend.VNI"}},
				Ports: []claim.Port{{Family: claim.IPv4, Port: 8472, VNI: 1, SetBy: "Backend.Port"},
					{Family: claim.IPv6, Port: 8472, VNI: 1, SetBy: "Backend.Port"}},
				Networks: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("2001:db8:5::/48")}},
			ClaimedAt:  started.Add(time.Second),
			SubnetFile: "/run/flannel/subnet.env"},
		Config: Config{Options: json.RawMessage(`{"EtcdEndpoints":["https://xxxxx@192.0.2.254:2379"],"EtcdPassword":"<redacted>"}`),
			Network: json.RawMessage(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)},
		Lease: &own,
		Peers: Peers{Synced: true, Admitted: []Lease{lease("10.5.13.0-24", "10.5.13.0/24", "192.0.2.13")},
			Rejected: []Rejected{{Key: "10.5.12.0-25", Reason: "subnet_length", Lease: &bad}, {Key: "garbage", Reason: "bad_key"}}},
		Readiness: Readiness{Ready: false, Checks: []Check{{Name: "kernel-converged", OK: true}, {Name: "lease-watch", OK: false, Reason: "etcd connection is CONNECTING"}}},
	}
}

// sameStatus compares two statuses as documents (raw JSON members may differ in spacing).
func sameStatus(a, b *Status) bool {
	ja, err := json.Marshal(a)
	if err != nil {
		return false
	}
	jb, err := json.Marshal(b)
	return err == nil && bytes.Equal(ja, jb)
}

// The document's shape is a contract with diagnose: it changes only by additions or
// with the schema version.
func TestResponseGolden(t *testing.T) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(Response{SchemaVersion: SchemaVersion, Status: sampleStatus()}); err != nil {
		t.Fatal(err)
	}
	got := buf.Bytes()
	const golden = "testdata/status.golden.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("status document changed (go test -update to accept):\n%s", got)
	}
	st, err := ParseResponse(want)
	if err != nil {
		t.Fatal(err)
	}
	if !sameStatus(st, sampleStatus()) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", st, sampleStatus())
	}
	// An empty status (a daemon just started) keeps its lists as empty lists.
	empty, err := json.Marshal(Status{Peers: Peers{Admitted: []Lease{}, Rejected: []Rejected{}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(empty), `"lease":null`) || !strings.Contains(string(empty), `"admitted":[]`) {
		t.Errorf("empty status: %s", empty)
	}
}

func TestParseResponseRefusals(t *testing.T) {
	for _, tt := range []struct{ doc, err string }{
		{`{"schemaVersion":2,"status":{}}`, "schema version 2"},
		{`{"status":{}}`, "schema version 0"},
		{`{"schemaVersion":1}`, "neither"},
		{`{"schemaVersion":1,"error":"x","status":{}}`, "both"},
		{`{"schemaVersion":1,"error":"permission denied"}`, "the daemon answered: permission denied"},
		{`{"schemaVersion":1,"status":{}} {}`, "after the document"},
		{`{"schemaVersion":1,"status":{"lease":{"subnet":"10.5.0.0/33"}}}`, "decoding"},
		{`{"schemaVersion":1,"status":`, "decoding"},
	} {
		if _, err := ParseResponse([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParseResponse(%s) = %v, want %q", tt.doc, err, tt.err)
		}
	}
	if _, err := ParseResponse([]byte(`{"schemaVersion":1,"error":"x"}`)); !errors.As(err, new(*ServerError)) {
		t.Errorf("an error response is not a ServerError: %v", err)
	}
}

// A parsed status survives being written and parsed again unchanged.
func FuzzParseResponse(f *testing.F) {
	golden, err := os.ReadFile("testdata/status.golden.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	for _, s := range []string{`{"schemaVersion":1,"status":{}}`, `{"schemaVersion":1,"error":"e"}`, `{}`, `[]`, `null`, `{"schemaVersion":1,"status":{"peers":{"admitted":[{"subnet":"10.0.0.0/8"}]}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseResponse(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(Response{SchemaVersion: SchemaVersion, Status: st})
		if err != nil {
			t.Fatalf("a parsed status does not encode: %v", err)
		}
		again, err := ParseResponse(out)
		if err != nil {
			t.Fatalf("%s does not parse again: %v", out, err)
		}
		out2, err := json.Marshal(Response{SchemaVersion: SchemaVersion, Status: again})
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
	})
}

func testKey(t *testing.T) string {
	return fmt.Sprintf("control-test/%d/%s", os.Getpid(), t.Name())
}

func serve(t *testing.T, key string, s *Server) *instancelock.Lock {
	t.Helper()
	l, err := instancelock.Acquire(key)
	if err != nil {
		t.Fatal(err)
	}
	l.Serve(s.Handle)
	t.Cleanup(func() { l.Release() })
	return l
}

func TestQuery(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server answers root only")
	}
	key := testKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Query(ctx, key); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Query with no daemon: %v, want ErrNotRunning", err)
	}
	srv := &Server{Status: func(context.Context) (*Status, error) { return sampleStatus(), nil }}
	serve(t, key, srv)
	st, err := Query(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !sameStatus(st, sampleStatus()) {
		t.Errorf("Query = %+v", st)
	}
	// A status that cannot be gathered is an error response.
	srv.Status = func(context.Context) (*Status, error) { return nil, errors.New("stopping") }
	if _, err := Query(ctx, key); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("Query of a failing status: %v", err)
	}
	// A peer that is not root gets a refusal only.
	srv.uid = func(*net.UnixConn) (uint32, error) { return 1000, nil }
	srv.Status = func(context.Context) (*Status, error) {
		t.Error("status gathered for a non-root peer")
		return sampleStatus(), nil
	}
	if _, err := Query(ctx, key); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Query as uid 1000: %v, want permission denied", err)
	}
	// Ill-formed requests get an error; a silent peer is dropped.
	srv.uid = nil
	for req, want := range map[string]string{"bogus\n": "unknown request", strings.Repeat("x", 300): "longer than"} {
		c, _, err := instancelock.Dial(key, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(req))
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var r Response
		err = json.NewDecoder(c).Decode(&r)
		c.Close()
		if err != nil || r.SchemaVersion != SchemaVersion || !strings.Contains(r.Error, want) {
			t.Errorf("request %q: %+v %v, want %q", req, r, err, want)
		}
	}
}

// Instances finds every instance by its control socket, leaves out lock-only sockets,
// and names the ones that did not answer.
func TestInstances(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server answers root only")
	}
	key := testKey(t)
	status := func(keys ...string) *Status {
		st := sampleStatus()
		st.Instance.Locks, st.Instance.Socket = keys, instancelock.Name(keys[0])
		return st
	}
	a, b := status(key+"/a", key+"/a-file"), status(key+"/b", key+"/b-file")
	serve(t, key+"/a", &Server{Status: func(context.Context) (*Status, error) { return a, nil }})
	serve(t, key+"/b", &Server{Status: func(context.Context) (*Status, error) { return b, nil }})
	for _, k := range []string{key + "/a-file", key + "/b-file", key + "/mute"} {
		l, err := instancelock.Acquire(k) // a lock that closes every connection
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Release() })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	found, err := Instances(ctx, []string{instancelock.Name(key + "/b")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string // this test's sockets only: other tests may hold locks meanwhile
	for _, f := range found {
		if !strings.HasPrefix(f.Socket, instancelock.Name(key)) {
			continue
		}
		switch {
		case f.Status != nil && sameStatus(f.Status, a) && f.Err == nil:
			got = append(got, f.Socket+" answered")
		case f.Status == nil && f.Err != nil && strings.Contains(f.Err.Error(), "no response"):
			got = append(got, f.Socket+" silent")
		default:
			t.Errorf("found %+v", f)
		}
	}
	// b is skipped; b's subnet file lock is not known to be b's, so it is reported.
	want := []string{instancelock.Name(key+"/a") + " answered", instancelock.Name(key+"/b-file") + " silent",
		instancelock.Name(key+"/mute") + " silent"}
	if !slices.Equal(got, want) {
		t.Errorf("Instances:\n got %q\nwant %q", got, want)
	}
}

// runAsNobody runs this test binary in a helper mode (env) that becomes nobody first.
func runAsNobody(t *testing.T, env ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as nobody")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

// A non-root client is refused, and a root client does not talk to a non-root socket holder.
func TestPeerCredentials(t *testing.T) {
	key := testKey(t)
	srv := &Server{Status: func(context.Context) (*Status, error) { return sampleStatus(), nil }}
	client, out := runAsNobody(t, "CONTROL_TEST_QUERY="+key)
	serve(t, key, srv)
	if err := client.Run(); err == nil || !strings.Contains(out.String(), "permission denied") {
		t.Errorf("a client running as nobody: %v\n%s", err, out)
	}

	squatKey := key + "/squat"
	holder, hout := runAsNobody(t, "CONTROL_TEST_HOLD="+squatKey)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(hout.String(), "held") {
		if time.Now().After(deadline) {
			t.Fatalf("helper: %s", hout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Query(ctx, squatKey)
	if !errors.Is(err, ErrNotRoot) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d, uid 65534", holder.Process.Pid)) {
		t.Errorf("Query of a socket nobody holds: %v, want ErrNotRoot naming pid %d", err, holder.Process.Pid)
	}
}

// becomeNobody drops root (the test binary is not readable by nobody, so it cannot be
// started as nobody).
func becomeNobody() {
	for _, err := range []error{syscall.Setgroups(nil), syscall.Setgid(65534), syscall.Setuid(65534)} {
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
	}
}

func TestMain(m *testing.M) {
	if os.Getenv("CONTROL_TEST_QUERY")+os.Getenv("CONTROL_TEST_HOLD") != "" {
		becomeNobody()
	}
	if key := os.Getenv("CONTROL_TEST_QUERY"); key != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := Query(ctx, key)
		fmt.Println(err)
		os.Exit(1)
	}
	if key := os.Getenv("CONTROL_TEST_HOLD"); key != "" {
		l, err := instancelock.Acquire(key)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		// It answers like a daemon would, to show that the client does not ask.
		l.Serve((&Server{Status: func(context.Context) (*Status, error) { return &Status{}, nil }, uid: func(*net.UnixConn) (uint32, error) { return 0, nil }}).Handle)
		fmt.Println("held")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestClaimSet(t *testing.T) {
	withClaims := Instance{Devices: []string{"flannel.1", "flannel0"},
		Claims: &claim.Set{Devices: []claim.Device{{Name: "flannel.1", SetBy: "Backend.VNI"}}, Networks: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16")}}}
	got := withClaims.ClaimSet()
	if len(got.Devices) != 2 || got.Devices[0].SetBy != "Backend.VNI" || got.Devices[1].Name != "flannel0" || len(got.Networks) != 1 {
		t.Errorf("with claims: %+v", got)
	}
	if len(withClaims.Claims.Devices) != 1 {
		t.Errorf("ClaimSet changed the status's claims: %+v", withClaims.Claims)
	}
	older := Instance{Devices: []string{"flannel.2"}, Network: netip.MustParsePrefix("10.6.0.0/16")}
	got = older.ClaimSet()
	if len(got.Devices) != 1 || got.Devices[0].Name != "flannel.2" || len(got.Networks) != 1 || got.Networks[0].String() != "10.6.0.0/16" {
		t.Errorf("without claims: %+v", got)
	}
}
