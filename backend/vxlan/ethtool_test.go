package vxlan

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

func TestParseChecksumOffload(t *testing.T) {
	tests := []struct {
		in      string
		want    ChecksumOffload
		wantErr string
	}{
		{`{}`, ChecksumAuto, ""},
		{`{"ChecksumOffload":null}`, ChecksumAuto, ""},
		{`{"ChecksumOffload":"auto"}`, ChecksumAuto, ""},
		{`{"ChecksumOffload":"on"}`, ChecksumOn, ""},
		{`{"checksumOffload":"OFF"}`, ChecksumOff, ""},
		{`{"ChecksumOffload":"Off"}`, ChecksumOff, ""},
		{`{"ChecksumOffload":"yes"}`, 0, `vxlan: ChecksumOffload must be "auto", "on" or "off", not "yes"`},
		{`{"ChecksumOffload":""}`, 0, `not ""`},
		{`{"ChecksumOffload":false}`, 0, `not false`},
		{`{"ChecksumOffload":1}`, 0, `not 1`},
		{`{"ChecksumOffload":"on","VNI":0}`, 0, "VNI 0 out of range"},
	}
	for _, tt := range tests {
		c, err := parseConfig([]byte(tt.in), 1500, false)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || c.ChecksumOffload != tt.want {
			t.Errorf("%s: got %v %v, want %v", tt.in, c.ChecksumOffload, err, tt.want)
		}
	}
}

func TestKernelBefore(t *testing.T) {
	tests := []struct {
		release    string
		before, ok bool
	}{
		{"5.4.0-150-generic", true, true},
		{"4.19.0", true, true},
		{"5.6.19", true, true},
		{"5.7.0", false, true},
		{"5.10.0-28-amd64", false, true},
		{"6.1.0", false, true},
		{"6.18.44-fc-v595", false, true},
		{"3.10.0-1160.el7.x86_64", true, true},
		{"5", false, false},
		{"", false, false},
		{"x.y", false, false},
		{"5.x", false, false},
		{"99999999.1", false, false},
	}
	for _, tt := range tests {
		before, ok := kernelBefore(tt.release, [2]int{5, 7})
		if before != tt.before || ok != tt.ok {
			t.Errorf("kernelBefore(%q) = %v %v, want %v %v", tt.release, before, ok, tt.before, tt.ok)
		}
	}
}

func TestWantTxChecksum(t *testing.T) {
	tests := []struct {
		mode    ChecksumOffload
		release string
		on, set bool
	}{
		{ChecksumAuto, "5.4.0-150-generic", false, true},
		{ChecksumAuto, "5.7.0", true, false},
		{ChecksumAuto, "6.18.44", true, false},
		{ChecksumAuto, "garbage", false, false},
		{ChecksumOn, "5.4.0", true, true},
		{ChecksumOn, "6.1.0", true, true},
		{ChecksumOff, "6.1.0", false, true},
		{ChecksumOff, "", false, true},
	}
	for _, tt := range tests {
		on, set, why := wantTxChecksum(tt.mode, tt.release)
		if on != tt.on || set != tt.set || why == "" {
			t.Errorf("wantTxChecksum(%v, %q) = %v %v %q, want %v %v", tt.mode, tt.release, on, set, why, tt.on, tt.set)
		}
	}
}

type recordingObserver struct {
	observe.Nop
	mu      sync.Mutex
	csum    map[string]bool
	objects map[string]int // "kind/op" -> n
}

func newRecordingObserver() *recordingObserver {
	return &recordingObserver{csum: map[string]bool{}, objects: map[string]int{}}
}

func (r *recordingObserver) KernelObjects(kind observe.Kind, op observe.Op, n int) {
	r.mu.Lock()
	r.objects[string(kind)+"/"+string(op)] += n
	r.mu.Unlock()
}

func (r *recordingObserver) TxChecksumOffload(dev string, on bool) {
	r.mu.Lock()
	r.csum[dev] = on
	r.mu.Unlock()
}

func (r *recordingObserver) get(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.objects[key]
}

func (l *lab) nsEthtool() *ethtool {
	return &ethtool{socket: func() (int, error) {
		var fd int
		err := l.ns.Do(func() error {
			var err error
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			return err
		})
		return fd, err
	}}
}

// ethtoolK cross-checks with `ethtool -k`: "on", "off" or "" (tool not installed).
func (l *lab) ethtoolK(t *testing.T, dev string) string {
	t.Helper()
	if _, err := exec.LookPath("ethtool"); err != nil {
		return ""
	}
	out, err := exec.Command("ip", "netns", "exec", l.ns.Name, "ethtool", "-k", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool -k %s: %v\n%s", dev, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "tx-checksum-ip-generic:"); ok {
			return strings.Fields(v)[0]
		}
	}
	t.Fatalf("ethtool -k %s has no tx-checksum-ip-generic line:\n%s", dev, out)
	return ""
}

func TestIntegrationChecksumOffload(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		release string
		want    bool
	}{
		{"auto on an affected kernel turns it off", "auto", "5.4.0-150-generic", false},
		{"auto on a fixed kernel leaves the default", "auto", "6.1.0", true},
		{"default is auto", "", "4.19.0", false},
		{"off forced", "off", "6.18.0", false},
		{"on forced on an affected kernel", "on", "5.4.0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLab(t)
			bj := `{"Type":"vxlan"}`
			if tt.mode != "" {
				bj = `{"Type":"vxlan","ChecksumOffload":"` + tt.mode + `"}`
			}
			b, _ := l.backend(testConfig(t, bj, false))
			b.ethtool = l.nsEthtool()
			b.kernelRelease = func() (string, error) { return tt.release, nil }
			obs := newRecordingObserver()
			b.SetObserver(obs)
			ctx := context.Background()
			if _, err := b.Prepare(ctx, nil); err != nil {
				t.Fatal(err)
			}
			check := func(when string) {
				t.Helper()
				got, err := l.nsEthtool().txChecksum("flannel.1")
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Fatalf("%s: tx checksum offload %v, want %v", when, got, tt.want)
				}
				want := map[bool]string{true: "on", false: "off"}[tt.want]
				if k := l.ethtoolK(t, "flannel.1"); k != "" && k != want {
					t.Fatalf("%s: ethtool -k says tx-checksum-ip-generic %s, want %s", when, k, want)
				}
				obs.mu.Lock()
				on, ok := obs.csum["flannel.1"]
				obs.mu.Unlock()
				if !ok || on != tt.want {
					t.Fatalf("%s: observer got %v (reported %v), want %v", when, on, ok, tt.want)
				}
			}
			check("after Prepare")
			if _, err := b.Start(ctx, ownLease(false)); err != nil {
				t.Fatal(err)
			}
			// The device is deleted by hand: the next round recreates it with the option applied.
			obs.mu.Lock()
			clear(obs.csum)
			obs.mu.Unlock()
			link, err := l.h.LinkByName("flannel.1")
			if err != nil {
				t.Fatal(err)
			}
			if err := l.h.LinkDel(link); err != nil {
				t.Fatal(err)
			}
			if err := b.Reconcile(ctx, subnet.PeersOf(peer("10.5.2.0/24", "192.0.2.2", "0e:00:00:00:00:02"))); err != nil {
				t.Fatal(err)
			}
			check("after the device was recreated")
			if n := obs.get(string(observe.Device) + "/" + string(observe.Add)); n != 2 {
				t.Errorf("device adds reported: %d, want 2 (created, recreated)", n)
			}
			for k, want := range map[string]int{"route/add": 1, "fdb/add": 1, "neigh/add": 1, "address/repair": 2} {
				if obs.get(k) != want {
					t.Errorf("%s reported %d, want %d: %v", k, obs.get(k), want, obs.objects)
				}
			}
		})
	}
}

// TestIntegrationEthtoolErrors: a missing device is an error naming it, not a panic.
func TestIntegrationEthtoolErrors(t *testing.T) {
	l := newLab(t)
	e := l.nsEthtool()
	if _, err := e.txChecksum("nosuchdev0"); err == nil || !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "nosuchdev0") {
		t.Fatalf("got %v", err)
	}
	if err := e.setTxChecksum("waytoolongdevicename", false); err == nil {
		t.Fatal("an over-long name was accepted")
	}
}

// A restarted daemon with another setting changes the adopted device both ways.
func TestIntegrationChecksumOffloadOnAdoption(t *testing.T) {
	l := newLab(t)
	for _, step := range []struct {
		mode string
		want bool
	}{{"off", false}, {"on", true}, {"off", false}} {
		b, _ := l.backend(testConfig(t, `{"Type":"vxlan","ChecksumOffload":"`+step.mode+`"}`, false))
		b.ethtool = l.nsEthtool()
		if _, err := b.Prepare(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		got, err := l.nsEthtool().txChecksum("flannel.1")
		if err != nil || got != step.want {
			t.Fatalf("%s: tx checksum offload %v (%v), want %v", step.mode, got, err, step.want)
		}
		want := map[bool]string{true: "on", false: "off"}[step.want]
		if k := l.ethtoolK(t, "flannel.1"); k != "" && k != want {
			t.Fatalf("%s: ethtool -k says %s", step.mode, k)
		}
	}
}

// Any release string is handled without panic and ordered consistently against 5.7.
func FuzzKernelBefore(f *testing.F) {
	for _, s := range []string{"5.4.0-150-generic", "6.18.44-fc", "5.7", "", "5.", ".7", "10.0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, release string) {
		before, ok := kernelBefore(release, [2]int{5, 7})
		if !ok {
			if before {
				t.Fatalf("%q: unparsed but reported before", release)
			}
			return
		}
		after, ok2 := kernelBefore(release, [2]int{0, 0})
		if !ok2 || after {
			t.Fatalf("%q: parsed against 5.7 but not against 0.0 (%v %v)", release, after, ok2)
		}
	})
}

// TxChecksum reads without changing anything, on a backend never prepared.
func TestIntegrationTxChecksumReadOnly(t *testing.T) {
	l := newLab(t)
	b, _ := l.backend(testConfig(t, `{"Type":"vxlan"}`, false))
	b.ethtool = l.nsEthtool()
	b.kernelRelease = func() (string, error) { return "5.4.0", nil }
	if got, err := b.TxChecksum(); err != nil || len(got) != 0 {
		t.Fatalf("no device yet: %+v %v", got, err)
	}
	if _, err := b.Prepare(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := l.nsEthtool().setTxChecksum("flannel.1", true); err != nil {
		t.Fatal(err)
	}
	fresh, _ := l.backend(testConfig(t, `{"Type":"vxlan"}`, false))
	fresh.ethtool = l.nsEthtool()
	fresh.kernelRelease = func() (string, error) { return "5.4.0", nil }
	got, err := fresh.TxChecksum()
	if err != nil || len(got) != 1 || got[0].Device != "flannel.1" || !got[0].On || got[0].Want || !got[0].Decided {
		t.Fatalf("TxChecksum: %+v %v", got, err)
	}
	if on, _ := l.nsEthtool().txChecksum("flannel.1"); !on {
		t.Error("TxChecksum changed the device")
	}
	if fresh.UDPPort() != 8472 {
		t.Errorf("UDPPort %d", fresh.UDPPort())
	}
}
