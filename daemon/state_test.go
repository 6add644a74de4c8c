package daemon

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

func TestParseState(t *testing.T) {
	tests := []struct {
		name, data string
		wantErr    string
	}{
		{"written by us", `{"key":"10.5.85.0-24","attrs":{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:0b"}},"devices":["flannel.1"]}`, ""},
		{"dual stack", `{"key":"10.5.85.0-24&2001:db8:5:85::-64","attrs":{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8::11"},"devices":["flannel.1","flannel-v6.1"]}`, ""},
		{"older, no devices", `{"key":"10.5.85.0-24","attrs":{"PublicIP":"192.0.2.11"}}`, ""},
		{"not JSON", `{"key":`, "unexpected end"},
		{"bad public IP", `{"attrs":{"PublicIP":"300.1.1.1"}}`, "invalid PublicIP"},
		{"device with a slash", `{"devices":["../eth0"]}`, `device "../eth0" is no link name`},
		{"device too long", `{"devices":["flannel.12345678"]}`, "no link name"},
		{"empty device", `{"devices":[""]}`, "no link name"},
		{"device with a space", `{"devices":["a b"]}`, "no link name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := parseState([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseState = %+v, %v; want error %q", st, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = st.previousLease()
		})
	}
}

// A state file written and read back gives what was written, and a file that does not
// parse is reported and ignored by the daemon (readState's error), never fatal.
func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.state.json")
	want := &state{Key: "10.5.85.0-24", Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.11"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:0b"}`)}, Devices: []string{"flannel.1"}}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readState(path)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("readState = %+v, %v; want %+v", got, err, want)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("readState of garbage: %v, want an error naming the file", err)
	}
	if st, err := readState(filepath.Join(t.TempDir(), "none.json")); st != nil || err != nil {
		t.Errorf("readState of a missing file: %+v, %v", st, err)
	}
}

// FuzzParseState: the state file is read at every start; parsing never panics nor accepts
// a device that is no link name, and what it accepts round-trips.
func FuzzParseState(f *testing.F) {
	for _, s := range []string{
		`{"key":"10.5.85.0-24","attrs":{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:0b"}},"devices":["flannel.1"]}`,
		`{"key":"0.0.0.0-0&2001:db8::-64","attrs":{"PublicIPv6":"2001:db8::1"},"devices":["flannel-v6.1"]}`,
		`{"key":"x","attrs":null,"devices":null}`, `{}`, `null`, `[]`, `{"devices":["a/b"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState(data)
		if err != nil {
			return
		}
		if st == nil {
			t.Fatal("nil state without an error")
		}
		for _, d := range st.Devices {
			if !validLinkName(d) {
				t.Fatalf("device %q accepted", d)
			}
		}
		if l := st.previousLease(); l == nil {
			t.Fatal("no previous lease from a state")
		}
		out, err := json.Marshal(st)
		if err != nil {
			t.Fatalf("an accepted state does not encode: %v", err)
		}
		again, err := parseState(out)
		if err != nil {
			t.Fatalf("%s (from %q) does not parse again: %v", out, data, err)
		}
		out2, err := json.Marshal(again)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
	})
}
