package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/backend/vxlan"
	"github.com/flannel-go/flannel/pkg/configkeys"
	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/klogtest"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// fakeCheck is a backend.ConfigChecker for the "fake" backend: it knows Type and
// ChecksumOffload, which must be "auto", and Port.
func fakeCheck(raw json.RawMessage) ([]configkeys.Warning, error) {
	var in struct {
		Type, ChecksumOffload string
		Port                  int
	}
	obj := configkeys.Object{Path: "Backend", Prefix: "fake: ", Fields: []configkeys.Field{
		{Name: "Type", Into: &in.Type}, {Name: "ChecksumOffload", Into: &in.ChecksumOffload}, {Name: "Port", Into: &in.Port}}}
	warns, err := obj.Decode(raw)
	if err != nil {
		return warns, err
	}
	if in.ChecksumOffload != "" && in.ChecksumOffload != "auto" {
		return warns, fmt.Errorf("fake: ChecksumOffload must be \"auto\", not %q", in.ChecksumOffload)
	}
	return warns, nil
}

// Every problem of the config is logged at once and retried without exiting; keys without
// effect are warned about once per version of the config.
func TestSetupBackendRetriesEveryProblem(t *testing.T) {
	log := klogtest.Capture(t, 0)
	m := &fakeManager{configs: []string{
		`{"Network":"10.5.0.0/29","Backend":{"Type":"vxaln","VIN":1}}`,
		`{"Network":"10.5.0.0/16","Backend":{"Type":"fake","ChecksumOffload":"yes","Prot":1}}`,
		`{"Network":"10.5.0.0/16","Backend":{"Type":"fake","ChecksumOffload":"yes","Prot":1}}`,
		`{"Netwrok":"x","Network":"10.5.0.0/16","Backend":{"Type":"fake"}}`, // the constructor refuses this once
		`{"Network":"10.5.0.0/16","Backend":{"Type":"fake"}}`,
	}}
	be := &fakeBackend{}
	ctorCalls := 0
	ready := healthz.NewReadiness(checkNetworkConfig)
	// Each fetch after the first comes after the previous config's problems were set.
	rec := &readinessAtFetch{fakeManager: m, ready: ready}
	deps := Deps{
		Manager: rec,
		Backends: map[string]backend.Constructor{
			"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) {
				ctorCalls++
				if ctorCalls == 1 {
					return nil, errors.New("fake: the node has no fake device")
				}
				return be, nil
			},
			"vxlan": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { panic("not called") },
		},
		CheckBackendConfig: map[string]backend.ConfigChecker{"fake": fakeCheck},
		LookupExtIface:     func(*subnet.Config) (*backend.ExternalInterface, error) { return &backend.ExternalInterface{}, nil },
	}
	obs := observe.Nop{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, got, err := setupBackend(ctx, deps, obs, ready, 5*time.Millisecond)
	if err != nil || got != be || cfg.BackendType != "fake" {
		t.Fatalf("setupBackend: %v, %v, %v", cfg, got, err)
	}
	if c := ready.Checks()[0]; c.Err != nil {
		t.Errorf("network-config check still failing: %v", c.Err)
	}
	text := log.String()
	for _, want := range []string{
		// first config: the top level and the backend type together
		`"Cannot use the network config; retrying until it is fixed" err="network is too small. Minimum useful network prefix is /28; unknown backend type: vxaln (did you mean vxlan? this build has: fake, vxlan)"`,
		// second: the backend's own option
		`"Cannot use the network config; retrying until it is fixed" err="fake: ChecksumOffload must be \"auto\", not \"yes\""`,
		`"Unknown key in the network config; ignored" key="Backend.Prot" didYouMean="Port"`,
		`"Unknown key in the network config; ignored" key="Netwrok" didYouMean="Network"`,
		// fourth: the constructor's refusal
		`"Cannot use the network config; retrying until it is fixed" err="fake: the node has no fake device"`,
	} {
		if n := len(log.Lines(want)); n != 1 {
			t.Errorf("%d lines with %s, want 1; log:\n%s", n, want, text)
		}
	}
	// vxaln's Backend.VIN is not judged: no backend of that type knows its keys.
	if strings.Contains(text, "VIN") {
		t.Errorf("keys of an unknown backend type judged:\n%s", text)
	}
	for _, line := range log.Lines("Unknown key") {
		if !strings.HasPrefix(line, "W") {
			t.Errorf("not a warning: %s", line)
		}
	}
	if want := []string{
		"not done yet", // before the first fetch
		"network is too small. Minimum useful network prefix is /28; unknown backend type: vxaln (did you mean vxlan? this build has: fake, vxlan)",
		`fake: ChecksumOffload must be "auto", not "yes"`,
		`fake: ChecksumOffload must be "auto", not "yes"`,
		"fake: the node has no fake device",
	}; !slices.Equal(rec.states, want) {
		t.Errorf("readiness at each fetch %q, want %q", rec.states, want)
	}
}

// readinessAtFetch records the network-config readiness problem ("" when none) each
// time the network config is fetched.
type readinessAtFetch struct {
	*fakeManager
	ready  *healthz.Readiness
	states []string
}

func (r *readinessAtFetch) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	s := ""
	if c := r.ready.Checks()[0]; c.Err != nil {
		s = c.Err.Error()
	}
	r.states = append(r.states, s)
	return r.fakeManager.GetNetworkConfig(ctx)
}

// An unchanged problem is logged once, not at every retry.
func TestSetupBackendLogsAnUnchangedProblemOnce(t *testing.T) {
	log := klogtest.Capture(t, 0)
	m := &fakeManager{configs: []string{`{"Network":"10.5.0.0/16","Backend":{"Type":"nope"}}`}}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	deps := Deps{Manager: m, Backends: map[string]backend.Constructor{"fake": nil}}
	ready := healthz.NewReadiness(checkNetworkConfig)
	_, _, err := setupBackend(ctx, deps, observe.Nop{}, ready, time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if n := len(log.Lines("unknown backend type: nope (this build has: fake)")); n != 1 {
		t.Errorf("logged %d times:\n%s", n, log.String())
	}
	if c := ready.Checks()[0]; c.Err == nil || c.Err.Error() != "unknown backend type: nope (this build has: fake)" {
		t.Errorf("readiness: %v", c.Err)
	}
}

// The daemon stays up with a config it cannot use, whatever the problem, and starts
// once the config is fixed.
func TestRunKeepsRetryingABadBackendConfig(t *testing.T) {
	for _, bad := range []string{
		`{"Network":"10.5.0.0/16","Backend":{"Type":"nope"}}`,
		`{"Network":"10.5.0.0/16","Backend":{"Type":"fake","ChecksumOffload":"yes"}}`,
	} {
		m := &fakeManager{configs: []string{bad}}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		deps := Deps{Manager: m, CheckBackendConfig: map[string]backend.ConfigChecker{"fake": fakeCheck},
			Backends: map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) {
				t.Error("constructor called with a bad config")
				return nil, errors.New("no")
			}}}
		tm := defaultTimings
		tm.configRetry = time.Millisecond
		if err := run(ctx, Config{SubnetFile: filepath.Join(t.TempDir(), "s.env")}, deps, tm); err != nil {
			t.Errorf("%s: run returned %v, want it to keep retrying until stopped", bad, err)
		}
		cancel()
	}
}

// fakeWatcher delivers config texts to WatchConfig's callback, one by one.
type fakeWatcher struct {
	texts chan string
}

func (w *fakeWatcher) WatchConfig(ctx context.Context, changed func(string)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-w.texts:
			changed(s)
		}
	}
}

func TestFollowConfig(t *testing.T) {
	log := klogtest.Capture(t, 0)
	running, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{
		Backends: map[string]backend.Constructor{"vxlan": nil, "host-gw": nil},
		CheckBackendConfig: map[string]backend.ConfigChecker{
			"vxlan": fakeCheck, "host-gw": func(json.RawMessage) ([]configkeys.Warning, error) { return nil, nil }},
	}
	w := &fakeWatcher{texts: make(chan string)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); followConfig(ctx, w, running, deps) }()
	for _, s := range []string{
		running.Raw, // the start: nothing to say
		`{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`,
		`{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`, // the same again: said once
		`{"Network":"10.5.0.0/16","Backend":{"Type":"vxaln"}}`,
		`{"network":"10.5.0.0/16","backend":{"type":"vxlan"}}`, // the running one, respelled
		``,
		`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Prot":1}}`,
	} {
		w.texts <- s
	}
	cancel()
	<-done
	want := []string{
		`"The network config changed; restart flanneld to apply it (the running config stays until then)" changes=["Backend.Type: vxlan -> host-gw"]`,
		`"The network config changed and cannot be used; the running config stays (a restart would wait until it is fixed)" changes=["Backend.Type: vxlan -> vxaln"] problems="unknown backend type: vxaln (did you mean vxlan? this build has: host-gw, vxlan)"`,
		`"The network config is the running one again; nothing to apply"`,
		`"The network config was deleted; the running config stays (a restart would wait until one is written)"`,
		`"The network config changed; restart flanneld to apply it (the running config stays until then)" changes=["Backend.Prot: (absent) -> 1"] warnings=["unknown key \"Backend.Prot\" (did you mean \"Port\"?)"]`,
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if i := strings.Index(line, "] "); i >= 0 {
			got = append(got, line[i+2:])
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("log\n got %s\nwant %s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNoteMTUChange(t *testing.T) {
	log := klogtest.Capture(t, 0)
	path := filepath.Join(t.TempDir(), "subnet.env")
	noteMTUChange(path, 1450) // no previous file: nothing to say
	if err := os.WriteFile(path, []byte("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noteMTUChange(path, 1450)
	noteMTUChange(path, 1500)
	lines := log.Lines("FLANNEL_MTU")
	want := `"FLANNEL_MTU changed: pods and the bridge keep the old MTU until they are recreated" old=1450 new=1500 file="` + path + `"`
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "W") || !strings.HasSuffix(lines[0], want) {
		t.Errorf("lines %q, want one ending with %s", lines, want)
	}
}

// The log lines configuration.md shows for a bad or changed config (the "E… " and
// "W… " lines of its code blocks) are the ones the daemon prints, word for word.
func TestDocumentedConfigLines(t *testing.T) {
	doc, err := os.ReadFile("../Documentation/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(string(doc), "\n") {
		for _, p := range []string{"E… ", "W… "} {
			if strings.HasPrefix(line, p) {
				want = append(want, strings.TrimPrefix(line, p))
			}
		}
	}
	if len(want) < 6 {
		t.Fatalf("found %d log lines in configuration.md: %q", len(want), want)
	}

	log := klogtest.Capture(t, 0)
	fake := func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return &fakeBackend{}, nil }
	deps := Deps{
		Manager: &fakeManager{configs: []string{
			`{"Network":"10.5.0.0/16","Backend":{"Type":"vxaln"}}`,
			`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","ChecksumOffload":"yes"}}`,
			`{"Netwrok":"x","Network":"10.5.0.0/16","network":"10.5.0.0/16","Backend":{"Type":"vxlan","VIN":1,"MacPrefix":"0E-2A"}}`,
		}},
		Backends:           map[string]backend.Constructor{"vxlan": fake, "host-gw": fake, "udp": fake, "wireguard": fake},
		CheckBackendConfig: map[string]backend.ConfigChecker{"vxlan": vxlan.CheckConfig},
		LookupExtIface:     func(*subnet.Config) (*backend.ExternalInterface, error) { return &backend.ExternalInterface{}, nil },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	running, _, err := setupBackend(ctx, deps, observe.Nop{}, healthz.NewReadiness(checkNetworkConfig), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	running, err = subnet.ParseConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	if err != nil {
		t.Fatal(err)
	}
	w := &fakeWatcher{texts: make(chan string)}
	fctx, fcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); followConfig(fctx, w, running, deps) }()
	w.texts <- `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`
	fcancel()
	<-done

	var got []string
	for _, line := range strings.Split(log.String(), "\n") {
		if i := strings.Index(line, "] "); i >= 0 {
			got = append(got, line[i+2:])
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("configuration.md shows\n  %s\nwhich the daemon does not print; it printed:\n  %s", w, strings.Join(got, "\n  "))
		}
	}
}
