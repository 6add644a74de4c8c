package hostgw

import "testing"

// The admission rule's host-gw check: no backend data, or null (a Kubernetes annotation).
func TestCheckBackendData(t *testing.T) {
	for in, ok := range map[string]bool{``: true, `null`: true, `{}`: false, `{"VNI":1}`: false, `"x"`: false} {
		if err := CheckBackendData([]byte(in)); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%v", in, err, ok)
		}
	}
}
