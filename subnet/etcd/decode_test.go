package etcd

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

var attrsSamples = []string{
	`{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`,
	`{"PublicIP":"198.51.100.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"},"BackendV6Data":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c5"}}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null}`,
	`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2"}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"host-gw"}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"extension","BackendData":"a string"}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":null}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"x\"}"}}`,
	`{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`, // v0.10
	`{ "PublicIP": "198.51.100.2", "PublicIPv6": null }`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,}}`,
	`{"PublicIP":"fd00::1","PublicIPv6":null}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":"198.51.100.3"}`,
	`{"PublicIP":"198.51.100.2","PublicIPv6":null}  `,
	`{"publicip":"198.51.100.2","PublicIPv6":null}`,
	`{"PublicIP":`,
	`null`,
}

// The fast path takes the canonical forms; every sample decodes as encoding/json does.
func TestDecodeAttrs(t *testing.T) {
	var a subnet.LeaseAttrs
	for i, s := range attrsSamples[:8] {
		if !fastAttrs([]byte(s), &a) {
			t.Errorf("sample %d not taken by the fast path: %s", i, s)
		}
	}
	for _, s := range attrsSamples[8:] {
		if fastAttrs([]byte(s), &a) {
			t.Errorf("fast path took a non-canonical value: %s", s)
		}
	}
	for _, s := range attrsSamples {
		checkDecode(t, []byte(s))
	}
	if err := decodeAttrs([]byte(attrsSamples[0]), &a); err != nil || a.BackendType != "vxlan" {
		t.Fatal(a, err)
	}
}

func checkDecode(t *testing.T, v []byte) {
	t.Helper()
	var got, want subnet.LeaseAttrs
	gotErr := decodeAttrs(v, &got)
	wantErr := json.Unmarshal(v, &want)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: decodeAttrs error %v, encoding/json error %v", v, gotErr, wantErr)
	}
	if gotErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: decodeAttrs %+v, encoding/json %+v", v, got, want)
	}
}

func FuzzDecodeAttrs(f *testing.F) {
	for _, s := range attrsSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) { checkDecode(t, v) })
}

func BenchmarkDecodeAttrs(b *testing.B) {
	v := []byte(attrsSamples[0])
	var a subnet.LeaseAttrs
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeAttrs(v, &a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAttrsEncodingJSON(b *testing.B) {
	v := []byte(attrsSamples[0])
	var a subnet.LeaseAttrs
	b.ReportAllocs()
	for b.Loop() {
		if err := json.Unmarshal(v, &a); err != nil {
			b.Fatal(err)
		}
	}
}
